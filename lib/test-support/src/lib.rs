//! Test harnesses that run real third-party peers.
//!
//! [`KubeHarness`] starts etcd and kube-apiserver (built by
//! `scripts/test-peers.sh`) on free loopback ports, installs the mesh's CRDs
//! from `helm/base/crds`, and hands the test a [`kube::Client`]. Everything is
//! torn down when the harness is dropped, including when the test panics.
//!
//! A harness that cannot start (binaries missing, a peer exiting early, no
//! readiness in time) returns an error naming the cause and the log file to
//! read; tests propagate it and fail. Nothing is skipped silently.
#![forbid(unsafe_code)]

pub mod dns;
mod echo;
mod http;
mod kube_harness;
pub mod kube_objects;
mod peers;
mod pki;
mod process;
mod test_ca;

pub use echo::tcp_echo_server;
pub use http::http_get;

/// `relative` inside this repository's checkout, found at run time from the
/// package under test (`CARGO_MANIFEST_DIR`, set by cargo for tests) or the
/// working directory, walking up to the workspace root (the directory with
/// `Cargo.lock`). Looked up at run time, not compile time, so a build reused
/// from another checkout of the repository still reads this checkout's files.
pub fn repo_path(relative: &str) -> std::path::PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    let root = start.ancestors().find(|dir| dir.join("Cargo.lock").is_file()).unwrap_or(&start);
    root.join(relative)
}
pub use kube_harness::{HarnessError, KubeHarness, crd_dir};
pub use peers::{PEERS_DIR_ENV, PeerBinary, peers_dir};
pub use test_ca::{IssuedLeaf, LeafSpec, TestCa};
