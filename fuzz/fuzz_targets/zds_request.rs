//! A ZDS packet as the node proxy receives it from the CNI agent: the
//! request decoder, plus the hello and ack decoders of the same codec.
//! A decoded request must re-encode to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_cni::zds::codec::{Request, decode_ack, decode_hello};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::decode(data) {
        assert_eq!(Request::decode(&request.encode()).ok(), Some(request));
    }
    let _ = decode_hello(data);
    let _ = decode_ack(data);
});
