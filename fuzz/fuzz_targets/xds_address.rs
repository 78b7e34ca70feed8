//! An xDS `Address` resource as istiod may send it: protobuf decode, then
//! validation into the model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(address) = mesh_proto::workload::Address::decode(data) {
        let _ = mesh_model::Address::try_from(address);
    }
});
