//! A peer's leaf certificate (DER) through the SPIFFE checks; an accepted
//! leaf carries a valid identity.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(leaf) = mesh_identity::verify::inspect_leaf(data) {
        assert_eq!(leaf.identity.to_string().parse().ok(), Some(leaf.identity));
    }
});
