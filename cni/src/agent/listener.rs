//! The agent's side of the plugin socket ([`crate::report`]): one request
//! line per connection, answered once the actor has decided.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::{PluginCall, call};
use crate::report::{MAX_LINE, PluginReply, PluginRequest};

/// Listens on `path`, replacing a stale socket (never another kind of
/// file) and creating the directory.
pub(super) fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "exists and is not a socket",
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
        }
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// Accepts plugin connections until the task is stopped.
pub(super) async fn serve(listener: UnixListener, path: PathBuf, calls: mpsc::Sender<PluginCall>) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                let calls = calls.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(conn, &calls).await {
                        tracing::warn!(error = %e, "cni plugin connection failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "accepting a cni plugin connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(conn: UnixStream, calls: &mpsc::Sender<PluginCall>) -> std::io::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut line = String::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
    BufReader::new(read).take(limit).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<PluginRequest>(line.trim_end()) {
        Ok(request) => {
            tracing::info!(?request, "cni plugin report");
            call(calls, request).await
        }
        Err(e) => PluginReply::Failed { message: format!("bad request from the plugin: {e}") },
    };
    let mut text = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}
