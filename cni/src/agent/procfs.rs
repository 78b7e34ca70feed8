//! Finding the network namespace of a pod the CNI plugin never reported
//! (it started before the agent, or the agent restarted).
//!
//! As upstream's node agent does, by cgroup: every container of a pod runs
//! in a cgroup whose path names the pod's uid (`.../pod<uid>/<container>`
//! with the cgroupfs driver, `...-pod<uid with _>.slice/...` with the
//! systemd driver). The first process found in such a cgroup whose network
//! namespace is not the agent's own (the agent runs on the host network)
//! gives `/proc/<pid>/ns/net`. Matching by uid is exact, unlike matching a
//! pod IP (IPs are reused and a host-network pod shares the node's), and it
//! needs nothing but read access to `/proc` (the agent runs with `hostPID`).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Whether a `/proc/<pid>/cgroup` text puts the process in pod `uid`.
pub fn cgroup_mentions_pod(cgroup: &str, uid: &str) -> bool {
    if uid.is_empty() {
        return false;
    }
    let dashed = format!("pod{uid}");
    let underscored = format!("pod{}", uid.replace('-', "_"));
    cgroup.lines().any(|line| {
        line.split('/').any(|part| {
            let part = part.strip_suffix(".slice").unwrap_or(part);
            [&dashed, &underscored].iter().any(|want| {
                part == want.as_str()
                    || part.strip_suffix(want.as_str()).is_some_and(|p| p.ends_with('-'))
            })
        })
    })
}

/// The netns path of a process of pod `uid` under `proc_root` (normally
/// `/proc`), skipping processes in the namespace whose inode is
/// `host_netns_inode`.
pub fn find_pod_netns(proc_root: &Path, uid: &str, host_netns_inode: u64) -> Option<PathBuf> {
    let entries = std::fs::read_dir(proc_root).ok()?;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let dir = entry.path();
        let Ok(cgroup) = std::fs::read_to_string(dir.join("cgroup")) else { continue };
        if !cgroup_mentions_pod(&cgroup, uid) {
            continue;
        }
        let netns = dir.join("ns/net");
        match std::fs::metadata(&netns) {
            Ok(meta) if meta.ino() != host_netns_inode => return Some(netns),
            _ => continue,
        }
    }
    None
}

/// [`find_pod_netns`] on this host's `/proc`.
pub fn find_host_pod_netns(uid: &str) -> Option<PathBuf> {
    let host = std::fs::metadata("/proc/self/ns/net").ok()?.ino();
    find_pod_netns(Path::new("/proc"), uid, host)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    const UID: &str = "2f1c3a4e-0b6d-4c1e-9a3b-8f7e6d5c4b3a";

    #[test]
    fn both_cgroup_drivers_match_and_others_do_not() {
        let cgroupfs = format!("0::/kubepods/besteffort/pod{UID}/0123abcd\n");
        let systemd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-01.scope\n",
            UID.replace('-', "_")
        );
        assert!(cgroup_mentions_pod(&cgroupfs, UID));
        assert!(cgroup_mentions_pod(&systemd, UID));
        assert!(!cgroup_mentions_pod("0::/system.slice/sshd.service\n", UID));
        assert!(!cgroup_mentions_pod(&cgroupfs, "2f1c3a4e"));
        assert!(!cgroup_mentions_pod(&cgroupfs, ""));
    }

    #[test]
    fn finds_the_process_of_the_pod_but_not_in_the_host_netns() {
        let root = tempfile::tempdir().unwrap();
        let add = |pid: &str, cgroup: &str| {
            let dir = root.path().join(pid);
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            std::fs::write(dir.join("cgroup"), cgroup).unwrap();
            std::fs::write(dir.join("ns/net"), pid).unwrap();
            std::fs::metadata(dir.join("ns/net")).unwrap().ino()
        };
        add("10", "0::/system.slice/x\n");
        let host = add("20", &format!("0::/kubepods/pod{UID}/a\n"));
        add("self", &format!("0::/kubepods/pod{UID}/a\n"));
        assert_eq!(find_pod_netns(root.path(), UID, host), None, "only the host netns");
        add("30", &format!("0::/kubepods/pod{UID}/b\n"));
        assert_eq!(find_pod_netns(root.path(), UID, host), Some(root.path().join("30/ns/net")));
        assert_eq!(find_pod_netns(root.path(), "other", host), None);
    }
}
