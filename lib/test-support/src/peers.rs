//! Where the third-party test peers live.

use std::path::PathBuf;

/// Environment variable that overrides the peers' bin directory.
pub const PEERS_DIR_ENV: &str = "MESH_PEERS_DIR";

/// The peers built by `scripts/test-peers.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerBinary {
    Etcd,
    KubeApiserver,
    Helm,
    H2spec,
}

impl PeerBinary {
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::KubeApiserver => "kube-apiserver",
            Self::Helm => "helm",
            Self::H2spec => "h2spec",
        }
    }

    /// Path of the binary, or an error telling how to build it.
    pub fn path(self) -> Result<PathBuf, String> {
        let path = peers_dir().join(self.file_name());
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{} not found at {}; run scripts/test-peers.sh (or set {PEERS_DIR_ENV})",
                self.file_name(),
                path.display()
            ))
        }
    }
}

/// `$MESH_PEERS_DIR` if set, else `$HOME/.cache/ambient-mesh/peers/bin`, the
/// same default as `scripts/test-peers.sh`.
pub fn peers_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(PEERS_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/ambient-mesh/peers/bin")
}
