//! What the machine needs before anything is created: root, iproute2,
//! iptables-restore or nft, network namespaces, and the binaries.

use std::path::{Path, PathBuf};

use super::error::Error;

/// The first of `names` found on `PATH`.
pub(crate) fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Every missing thing, at once.
pub(crate) fn check(bin_dir: &Path) -> Result<(), Error> {
    let mut missing = Vec::new();
    if let Err(e) = mesh_netns::require_root() {
        missing.push(format!("{e}: run as root (network namespaces, veths and iptables need CAP_SYS_ADMIN and CAP_NET_ADMIN)"));
    }
    if which(&["ip"]).is_none() {
        missing.push("`ip` (iproute2) is not on PATH".into());
    }
    if which(&["iptables-restore", "nft"]).is_none() {
        missing.push(
            "neither `iptables-restore` nor `nft` is on PATH (needed for traffic capture)".into(),
        );
    }
    if !Path::new("/proc/self/ns/net").exists() {
        missing.push("the kernel has no network namespaces (/proc/self/ns/net)".into());
    }
    if !Path::new("/proc/sys/net/ipv4/ip_forward").exists() {
        missing.push("the kernel has no IPv4 forwarding (/proc/sys/net/ipv4/ip_forward)".into());
    }
    for bin in ["istiod", "ztunnel"] {
        let path = bin_dir.join(bin);
        if !path.is_file() {
            missing.push(format!(
                "{} not found (build it: `cargo build -p istiod -p ztunnel --bins`, or pass --bin-dir)",
                path.display()
            ));
        }
    }
    if missing.is_empty() { Ok(()) } else { Err(Error::Preflight(missing)) }
}

/// The capture backend: iptables-restore when present, else nftables.
pub(crate) fn backend() -> mesh_cni::Backend {
    if which(&["iptables-restore"]).is_some() {
        mesh_cni::Backend::Iptables
    } else {
        mesh_cni::Backend::Nftables
    }
}
