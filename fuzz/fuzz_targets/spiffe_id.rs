//! SPIFFE identities: parsing any text, and parse(display) == id.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use mesh_model::Identity;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = Identity::from_str(&text) {
        assert_eq!(Identity::from_str(&id.to_string()).as_ref(), Ok(&id));
    }
});
