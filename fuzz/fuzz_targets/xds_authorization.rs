//! An xDS `Authorization` resource: protobuf decode, then validation into
//! the model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = mesh_proto::security::Authorization::decode(data) {
        let _ = mesh_model::Authorization::try_from(policy);
    }
});
