//! A minimal HTTP/1.0 GET from inside a network namespace, for readiness
//! and debug endpoints that listen only there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mesh_netns::Netns;

/// `GET path` from `netns` to `addr`: the status code and body.
pub(crate) fn get(netns: &str, addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let ns = Netns::named(netns).map_err(|e| e.to_string())?;
    let stream = ns
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(500)))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    request(stream, addr, path)
}

fn request(mut stream: TcpStream, addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let timeout = Some(Duration::from_secs(2));
    stream.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    stream.set_write_timeout(timeout).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("GET {addr}{path}: {e}"))?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| format!("GET {addr}{path}: {e}"))?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {addr}{path}: not an HTTP response"))?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((code, body))
}
