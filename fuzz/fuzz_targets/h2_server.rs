//! Arbitrary bytes as a whole client side of an HTTP/2 connection to the
//! HBONE server, whose inbound refuses every tunnel. The server must end
//! (within the timeout) and never panic.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mesh_hbone::server::{ConnectRequest, Inbound, Refusal, serve_connection};
use mesh_hbone::{H2Settings, H2Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct RefuseAll;

impl Inbound for RefuseAll {
    type Upstream = ();

    async fn open(&self, request: ConnectRequest) -> Result<(), Refusal> {
        Err(Refusal::Denied(request.target.to_string()))
    }

    async fn proxy(&self, _: (), _: H2Stream) {
        unreachable!("every tunnel is refused");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_time().build() else {
        return;
    };
    let (client, server) = tokio::io::duplex(64 * 1024);
    let input = data.to_vec();
    runtime.block_on(async move {
        let peer = tokio::spawn(async move {
            let (mut read, mut write) = tokio::io::split(client);
            let writer = async {
                let _ = write.write_all(&input).await;
                let _ = write.shutdown().await;
            };
            let reader = async {
                let mut sink = Vec::new();
                let _ = read.read_to_end(&mut sink).await;
            };
            tokio::join!(writer, reader);
        });
        let serve = serve_connection(server, H2Settings::default(), Arc::new(RefuseAll));
        let _ = tokio::time::timeout(Duration::from_millis(200), serve).await;
        peer.abort();
    });
});
