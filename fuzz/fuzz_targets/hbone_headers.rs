//! The HBONE header parsers on any text; a parsed traceparent must survive
//! encode and parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_hbone::headers::{Baggage, TraceParent, parse_forwarded_for};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Baggage::parse(&text).encode();
    let _ = parse_forwarded_for(&text);
    if let Some(tp) = TraceParent::parse(&text) {
        assert_eq!(TraceParent::parse(&tp.encode()), Some(tp));
    }
});
