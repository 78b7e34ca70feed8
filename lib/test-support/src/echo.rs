//! A TCP echo server for data-path tests.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Serves echo on `bind` (port 0 for any) until the test's runtime ends.
/// Each connection is echoed until the client's EOF, then half-closed, so a
/// test can check that end-of-stream travels both ways.
pub async fn tcp_echo_server(bind: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    Ok(addr)
}
