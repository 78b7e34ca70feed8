//! `parse_connect` on a request built from fuzzed input, read as lines:
//! method, then authority, then `name: value` headers. Parts the `http`
//! builder rejects are simply skipped.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let method = lines.next().unwrap_or_default();
    let authority = lines.next().unwrap_or_default();
    let mut builder =
        http::Request::builder().method(method).uri(String::from_utf8_lossy(authority).as_ref());
    for line in lines {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(at) => line.split_at(at),
            None => (line, &b":"[..]),
        };
        builder = builder.header(name, value.get(1..).unwrap_or_default().trim_ascii());
    }
    if let Ok(request) = builder.body(()) {
        if let Ok(connect) = mesh_hbone::server::parse_connect(&request) {
            assert_ne!(connect.target.port(), 0);
            assert_eq!(request.method(), http::Method::CONNECT);
        }
    }
});
