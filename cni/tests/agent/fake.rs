//! A stand-in for ztunnel's ZDS side that acks everything and records what
//! it saw, and the fixtures the agent tests share.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_cni::Backend;
use mesh_cni::agent::{Agent, AgentConfig, LocalPods, LocalPodsHandle, PodInfo};
use mesh_cni::zds::{ZdsRequest, ZdsServer};
use mesh_netns::{NodeSpec, PodHandle, PodSpec, Topology, require_root};
use tokio::sync::mpsc;

/// One request as the fake ztunnel saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    Connected,
    /// With the inode of the netns fd that came with it.
    Add {
        uid: String,
        name: String,
        namespace: String,
        service_account: String,
        netns_ino: u64,
    },
    Keep {
        uid: String,
    },
    /// With whether the pod's capture rules were still installed when the
    /// DelWorkload arrived.
    Del {
        uid: String,
        rules_present: bool,
    },
    SnapshotSent,
}

/// A fake ztunnel: listens on the ZDS socket, acks every request.
pub(crate) struct FakeZtunnel {
    /// Listening until dropped.
    _server: ZdsServer,
    pub(crate) seen: mpsc::UnboundedReceiver<Seen>,
}

impl FakeZtunnel {
    /// `pods` maps ZDS uids to their netns names, to check the rules at
    /// DelWorkload time with `backend`.
    pub(crate) fn start(path: &Path, pods: Vec<(String, String)>, backend: Backend) -> Self {
        Self::refusing(path, pods, backend, Vec::new())
    }

    /// As [`Self::start`], refusing every Add of the uids in `refuse`.
    pub(crate) fn refusing(
        path: &Path,
        pods: Vec<(String, String)>,
        backend: Backend,
        refuse: Vec<String>,
    ) -> Self {
        let (server, mut events) = ZdsServer::bind(path, 16).unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let seen = match &event.request {
                    ZdsRequest::Connected => Seen::Connected,
                    ZdsRequest::Add { uid, info, netns } => Seen::Add {
                        uid: uid.clone(),
                        name: info.name.clone(),
                        namespace: info.namespace.clone(),
                        service_account: info.service_account.clone(),
                        netns_ino: std::fs::File::from(netns.try_clone().unwrap())
                            .metadata()
                            .unwrap()
                            .ino(),
                    },
                    ZdsRequest::Keep { uid } => Seen::Keep { uid: uid.clone() },
                    ZdsRequest::Del { uid } => {
                        let name = pods.iter().find(|(u, _)| u == uid).map(|(_, n)| n.clone());
                        let rules_present = name.is_some_and(|n| {
                            let netns = mesh_netns::Netns::named(&n).unwrap();
                            backend.installed(&netns).unwrap()
                        });
                        Seen::Del { uid: uid.clone(), rules_present }
                    }
                    ZdsRequest::SnapshotSent => Seen::SnapshotSent,
                };
                let refused = matches!(&seen, Seen::Add { uid, .. } if refuse.contains(uid));
                event.ack(if refused { Err("refused by the test".to_owned()) } else { Ok(()) });
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        Self { _server: server, seen }
    }

    /// The next request, within 10 s.
    pub(crate) async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("ztunnel saw nothing within 10 s")
            .expect("fake ztunnel stopped")
    }

    /// A whole snapshot after a connection: the uids added, in order.
    pub(crate) async fn snapshot(&mut self) -> Vec<String> {
        assert_eq!(self.next().await, Seen::Connected);
        let mut added = Vec::new();
        loop {
            match self.next().await {
                Seen::Add { uid, .. } => added.push(uid),
                Seen::SnapshotSent => return added,
                other => panic!("unexpected {other:?} in a snapshot"),
            }
        }
    }

    /// The next request other than `Connected`.
    pub(crate) async fn next_request(&mut self) -> Seen {
        loop {
            let seen = self.next().await;
            if seen != Seen::Connected {
                return seen;
            }
        }
    }
}

/// A topology of one node with the named pods (namespace `default`).
pub(crate) fn topology(prefix: &str, pods: &[&str]) -> Topology {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    let nodes = vec![NodeSpec { name: "a".into() }];
    let specs: Vec<PodSpec> = pods
        .iter()
        .map(|name| PodSpec { node: "a".into(), namespace: "default".into(), name: (*name).into() })
        .collect();
    Topology::build(prefix, &nodes, &specs).unwrap()
}

/// The inode of a pod's netns.
pub(crate) fn netns_ino(pod: &PodHandle) -> u64 {
    std::fs::metadata(netns_path(pod)).unwrap().ino()
}

pub(crate) fn netns_path(pod: &PodHandle) -> PathBuf {
    Path::new("/var/run/netns").join(&pod.netns_name)
}

/// The agent's view of a topology pod; `netns` set when the source knows
/// it (else the plugin reports it).
pub(crate) fn pod_info(pod: &PodHandle, with_netns: bool) -> PodInfo {
    PodInfo {
        uid: format!("uid-{}", pod.name),
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        service_account: format!("sa-{}", pod.name),
        ips: if with_netns { vec![pod.ip.into()] } else { Vec::new() },
        netns: with_netns.then(|| netns_path(pod)),
        containers: vec!["app".into()],
        ..PodInfo::default()
    }
}

/// `istio.io/dataplane-mode=<mode>`.
pub(crate) fn mode(value: &str) -> mesh_cni::agent::Labels {
    [(mesh_cni::agent::pod::DATAPLANE_MODE_LABEL.to_owned(), value.to_owned())].into()
}

/// An agent on a local source, fast ticks, sockets in `dir`.
pub(crate) async fn agent(dir: &Path, backend: Backend) -> (Agent, LocalPodsHandle) {
    let mut config = AgentConfig::new(dir.join("ztunnel.sock"));
    config.cni_socket = Some(dir.join("cni.sock"));
    config.backend = backend;
    config.tick = Duration::from_millis(100);
    config.plugin_timeout = Duration::from_secs(10);
    let (source, handle) = LocalPods::new();
    let agent = Agent::start(config, source).await.unwrap();
    (agent, handle)
}
