//! The node agent against a fake ztunnel (the real ZDS server side) on
//! real pod network namespaces: the CNI plugin binary holding a pod until
//! ztunnel acked it, failing closed without an agent, un-enrolment on
//! relabelling (ztunnel first, rules after), the snapshot a restarted
//! ztunnel gets, and a restarted agent re-adopting pods without
//! duplicating rules. Needs root: fails (never skips) without it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod fake;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use fake::{FakeZtunnel, Seen, agent, mode, netns_ino, netns_path, pod_info, topology};
use mesh_cni::agent::{Labels, PodState};
use mesh_cni::zds::{ZdsRequest, ZdsServer};
use mesh_cni::{Backend, iptables, nftables};
use mesh_netns::PodHandle;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn prefix(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

fn plugin_conf(socket: &std::path::Path, ip: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "mesh-cni",
        "agent_socket": socket,
        "timeout_seconds": 10,
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
            "ips": [{"address": format!("{ip}/32"), "interface": 0}],
        },
    })
    .to_string()
}

/// Starts the real plugin binary for `pod` with `command`.
fn spawn_plugin(command: &str, pod: &PodHandle, conf: &str) -> std::process::Child {
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID=infra-{}",
        pod.namespace, pod.name, pod.name
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-cni"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", format!("infra-{}", pod.name))
        .env("CNI_NETNS", netns_path(pod))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
    child
}

async fn finish(child: std::process::Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap()
}

fn installed(pod: &PodHandle, backend: Backend) -> bool {
    backend.installed(&pod.netns().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_add_returns_prev_result_only_after_ztunnels_ack() {
    let topology = topology(&prefix("ca"), &["web"]);
    let web = topology.pod("default", "web").unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let (server, mut events) = ZdsServer::bind(dir.path().join("ztunnel.sock"), 8).unwrap();
    let (agent, pods) = agent(dir.path(), Backend::Iptables).await;
    pods.set_namespace("default", mode("ambient")).await.unwrap();
    // The pod as the API server has it: no IP and no netns yet.
    pods.upsert_pod(pod_info(&web, false)).await.unwrap();
    pods.synced().await.unwrap();

    let conf = plugin_conf(&dir.path().join("cni.sock"), &web.ip.to_string());
    let mut child = spawn_plugin("ADD", &web, &conf);

    let connected = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert!(matches!(connected.request, ZdsRequest::Connected));
    connected.ack(Ok(()));
    // The snapshot is empty unless the plugin's report beat the sync.
    let first = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
    let snapshot_done = matches!(first.request, ZdsRequest::SnapshotSent);
    let add = if snapshot_done {
        first.ack(Ok(()));
        tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap()
    } else {
        first
    };
    let ZdsRequest::Add { uid, info, netns } = &add.request else {
        panic!("expected AddWorkload, got {:?}", add.request)
    };
    assert_eq!(uid, "uid-web");
    assert_eq!((info.name.as_str(), info.namespace.as_str()), ("web", "default"));
    assert_eq!(info.service_account, "sa-web");
    let ino = std::fs::File::from(netns.try_clone().unwrap()).metadata().unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&ino), netns_ino(&web), "the pod's netns");
    // Rules are in before ztunnel is asked, and the plugin still waits.
    assert!(installed(&web, Backend::Iptables), "rules before AddWorkload");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(child.try_wait().unwrap().is_none(), "the plugin returned before the Ack");
    assert_eq!(agent.state("uid-web"), Some(PodState::Pending));
    add.ack(Ok(()));
    if !snapshot_done {
        // The pod was in the snapshot: its end follows.
        let end = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
        assert!(matches!(end.request, ZdsRequest::SnapshotSent), "{:?}", end.request);
        end.ack(Ok(()));
    }

    let out = finish(child).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let conf: Value = serde_json::from_str(&conf).unwrap();
    assert_eq!(printed, conf["prevResult"], "prevResult unchanged");
    assert_eq!(agent.state("uid-web"), Some(PodState::Enrolled));
    let saved = iptables::save(&web.netns().unwrap()).unwrap();
    assert!(saved.contains("--to-ports 15053"), "DNS captured by default: {saved}");

    // DEL: ztunnel lets go first, then the rules go.
    let del = finish(spawn_plugin("DEL", &web, &conf.to_string())).await;
    assert!(del.status.success());
    let event = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert!(matches!(&event.request, ZdsRequest::Del { uid } if uid == "uid-web"));
    assert!(installed(&web, Backend::Iptables), "rules stay until ztunnel acked the Del");
    event.ack(Ok(()));
    agent.wait_for("uid-web", PodState::Outside, WAIT).await.unwrap();
    assert!(!installed(&web, Backend::Iptables));
    drop(server);
}

#[tokio::test]
async fn plugin_add_fails_closed_without_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let pod = PodHandle {
        node: "a".into(),
        namespace: "default".into(),
        name: "lonely".into(),
        ip: [10, 244, 0, 9].into(),
        netns_name: "does-not-matter".into(),
    };
    let conf = plugin_conf(&dir.path().join("nobody.sock"), "10.244.0.9");
    let out = finish(spawn_plugin("ADD", &pod, &conf)).await;
    assert!(!out.status.success(), "ADD must fail");
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["code"], 11, "try again later: {error}");
    assert_eq!(error["cniVersion"], "1.0.0");
    assert!(error["msg"].as_str().unwrap().contains("default/lonely"), "{error}");
    assert!(error["details"].as_str().unwrap().contains("nobody.sock"), "{error}");
    // DEL never fails.
    let out = finish(spawn_plugin("DEL", &pod, &conf)).await;
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_passes_non_mesh_pods_and_fails_when_ztunnel_never_acks() {
    let topology = topology(&prefix("cp"), &["plain", "stuck"]);
    let plain = topology.pod("default", "plain").unwrap().clone();
    let stuck = topology.pod("default", "stuck").unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    // No ztunnel at all, and a short verdict deadline.
    let mut config = mesh_cni::agent::AgentConfig::new(dir.path().join("ztunnel.sock"));
    config.cni_socket = Some(dir.path().join("cni.sock"));
    config.tick = Duration::from_millis(100);
    config.plugin_timeout = Duration::from_secs(1);
    let (source, pods) = mesh_cni::agent::LocalPods::new();
    let agent = mesh_cni::agent::Agent::start(config, source).await.unwrap();
    pods.set_namespace("default", Labels::new()).await.unwrap();
    pods.upsert_pod(pod_info(&plain, false)).await.unwrap();
    let mut wants_in = pod_info(&stuck, false);
    wants_in.labels = mode("ambient");
    pods.upsert_pod(wants_in).await.unwrap();
    pods.synced().await.unwrap();
    let socket = dir.path().join("cni.sock");

    // Not a mesh pod: prevResult at once, no rules.
    let conf = plugin_conf(&socket, &plain.ip.to_string());
    let out = finish(spawn_plugin("ADD", &plain, &conf)).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, serde_json::from_str::<Value>(&conf).unwrap()["prevResult"]);
    assert!(!installed(&plain, Backend::Iptables));

    // A mesh pod ztunnel never acks: the rules are in (its traffic is
    // refused, not leaked) and ADD fails, to be retried.
    let conf = plugin_conf(&socket, &stuck.ip.to_string());
    let out = finish(spawn_plugin("ADD", &stuck, &conf)).await;
    assert!(!out.status.success(), "ADD must fail: {}", String::from_utf8_lossy(&out.stdout));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["code"], 11, "{error}");
    assert!(error["msg"].as_str().unwrap().contains("default/stuck"), "{error}");
    assert!(error["details"].as_str().unwrap().contains("not enrolled in time"), "{error}");
    assert_eq!(agent.state("uid-stuck"), Some(PodState::Pending));
    assert!(installed(&stuck, Backend::Iptables), "fail closed: the rules stay");
}

/// Whether `pod`'s namespace holds any rule of ours, by the tools' output.
fn no_mesh_rules(pod: &PodHandle) {
    let netns = pod.netns().unwrap();
    let v4 = iptables::save(&netns).unwrap();
    assert!(!v4.contains("MESH_"), "{v4}");
    let nft = nftables::save(&netns).unwrap();
    assert!(!nft.contains("table inet mesh"), "{nft}");
}

async fn relabel_unenrols(backend: Backend, tag: &str) {
    let topology = topology(&prefix(tag), &["app"]);
    let app = topology.pod("default", "app").unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let pods_ns = vec![("uid-app".to_owned(), app.netns_name.clone())];
    let mut ztunnel = FakeZtunnel::start(&dir.path().join("ztunnel.sock"), pods_ns, backend);
    let (agent, pods) = agent(dir.path(), backend).await;
    pods.set_namespace("default", Labels::new()).await.unwrap();
    let mut pod = pod_info(&app, true);
    pod.labels = mode("ambient");
    pod.annotations.insert("ambient.istio.io/dns-capture".into(), "false".into());
    pods.upsert_pod(pod.clone()).await.unwrap();
    pods.synced().await.unwrap();
    agent.wait_for("uid-app", PodState::Enrolled, WAIT).await.unwrap();
    assert!(installed(&app, backend));
    let rules = match backend {
        Backend::Iptables => iptables::save(&app.netns().unwrap()).unwrap(),
        Backend::Nftables => nftables::save(&app.netns().unwrap()).unwrap(),
    };
    assert!(!rules.contains("15053"), "dns-capture=false: {rules}");
    assert_eq!(ztunnel.snapshot().await, ["uid-app"]);

    // The pod label says none: DelWorkload while the rules are still in,
    // then the rules go.
    pod.labels = mode("none");
    pods.upsert_pod(pod.clone()).await.unwrap();
    let del = ztunnel.next_request().await;
    assert_eq!(del, Seen::Del { uid: "uid-app".into(), rules_present: true });
    agent.wait_for("uid-app", PodState::Outside, WAIT).await.unwrap();
    no_mesh_rules(&app);

    // No pod label: the namespace decides, and relabelling it enrols and
    // un-enrols without a restart.
    pod.labels = Labels::new();
    pods.upsert_pod(pod.clone()).await.unwrap();
    pods.set_namespace("default", mode("ambient")).await.unwrap();
    agent.wait_for("uid-app", PodState::Enrolled, WAIT).await.unwrap();
    assert!(matches!(ztunnel.next_request().await, Seen::Add { uid, .. } if uid == "uid-app"));
    pods.set_namespace("default", mode("none")).await.unwrap();
    let del = ztunnel.next_request().await;
    assert_eq!(del, Seen::Del { uid: "uid-app".into(), rules_present: true });
    agent.wait_for("uid-app", PodState::Outside, WAIT).await.unwrap();
    no_mesh_rules(&app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabelling_to_none_unenrols_iptables() {
    relabel_unenrols(Backend::Iptables, "cr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabelling_to_none_unenrols_nftables() {
    relabel_unenrols(Backend::Nftables, "cf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_ztunnel_gets_the_snapshot() {
    let topology = topology(&prefix("cs"), &["one", "two", "three"]);
    let get = |n: &str| topology.pod("default", n).unwrap().clone();
    let (one, two, three) = (get("one"), get("two"), get("three"));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ztunnel.sock");
    let names: Vec<(String, String)> = [&one, &two, &three]
        .iter()
        .map(|p| (format!("uid-{}", p.name), p.netns_name.clone()))
        .collect();
    let ztunnel = FakeZtunnel::start(&sock, names.clone(), Backend::Iptables);
    let (agent, pods) = agent(dir.path(), Backend::Iptables).await;
    pods.set_namespace("default", mode("ambient")).await.unwrap();
    for pod in [&one, &two, &three] {
        pods.upsert_pod(pod_info(pod, true)).await.unwrap();
    }
    pods.synced().await.unwrap();
    for uid in ["uid-one", "uid-two", "uid-three"] {
        agent.wait_for(uid, PodState::Enrolled, WAIT).await.unwrap();
    }

    // ztunnel goes away; meanwhile pod three leaves the mesh. Its rules
    // stay until the new ztunnel has confirmed it does not serve it.
    drop(ztunnel);
    tokio::time::sleep(Duration::from_millis(500)).await;
    pods.remove_pod("uid-three").await.unwrap();
    agent.wait_for("uid-three", PodState::Removing, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(installed(&three, Backend::Iptables), "rules kept while ztunnel is away");

    let mut ztunnel = FakeZtunnel::start(&sock, names, Backend::Iptables);
    assert_eq!(ztunnel.next().await, Seen::Connected);
    let mut added = Vec::new();
    loop {
        match ztunnel.next().await {
            Seen::Add { uid, name, service_account, netns_ino: ino, .. } => {
                let pod = if name == "one" { &one } else { &two };
                assert_eq!(ino, netns_ino(pod), "{uid} with its own netns");
                assert_eq!(service_account, format!("sa-{name}"));
                added.push(uid);
            }
            Seen::SnapshotSent => break,
            other => panic!("unexpected {other:?} in the snapshot"),
        }
    }
    added.sort();
    assert_eq!(added, ["uid-one", "uid-two"], "every enrolled pod, then SnapshotSent");
    agent.wait_for("uid-three", PodState::Outside, WAIT).await.unwrap();
    assert!(!installed(&three, Backend::Iptables), "released after SnapshotSent");
    assert!(installed(&one, Backend::Iptables) && installed(&two, Backend::Iptables));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_readopts_pods_without_duplicating_rules() {
    let topology = topology(&prefix("cg"), &["app"]);
    let app = topology.pod("default", "app").unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let names = vec![("uid-app".to_owned(), app.netns_name.clone())];
    let mut ztunnel =
        FakeZtunnel::start(&dir.path().join("ztunnel.sock"), names, Backend::Iptables);
    for round in 0..2 {
        let (agent, pods) = agent(dir.path(), Backend::Iptables).await;
        pods.set_namespace("default", mode("ambient")).await.unwrap();
        pods.upsert_pod(pod_info(&app, true)).await.unwrap();
        pods.synced().await.unwrap();
        agent.wait_for("uid-app", PodState::Enrolled, WAIT).await.unwrap();
        assert_eq!(ztunnel.snapshot().await, ["uid-app"], "round {round}");
        // Stopping the agent leaves the pod captured.
        agent.shutdown().await;
        assert!(installed(&app, Backend::Iptables));
    }
    let saved = iptables::save(&app.netns().unwrap()).unwrap();
    assert_eq!(saved.matches("-A OUTPUT -j MESH_OUTPUT").count(), 3, "mangle, nat, raw: {saved}");
    assert_eq!(saved.matches("--to-ports 15001").count(), 1, "{saved}");

    // Relabelled while no agent ran: the next agent leaves it out of the
    // snapshot, and once ztunnel acked that, removes the leftover rules.
    let (agent, pods) = agent(dir.path(), Backend::Iptables).await;
    pods.set_namespace("default", mode("none")).await.unwrap();
    pods.upsert_pod(pod_info(&app, true)).await.unwrap();
    pods.synced().await.unwrap();
    assert_eq!(ztunnel.snapshot().await, Vec::<String>::new());
    for _ in 0..100 {
        if !installed(&app, Backend::Iptables) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    no_mesh_rules(&app);
    assert_eq!(agent.state("uid-app"), Some(PodState::Outside));
}

/// A pod ztunnel refuses is retried with a growing delay, not on every
/// tick; an accepted pod is added once per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_adds_back_off_and_accepted_pods_are_added_once() {
    let topology = topology(&prefix("cb"), &["ok", "no"]);
    let ok = topology.pod("default", "ok").unwrap().clone();
    let no = topology.pod("default", "no").unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ztunnel.sock");
    let mut ztunnel =
        FakeZtunnel::refusing(&sock, Vec::new(), Backend::Iptables, vec!["uid-no".into()]);
    let (agent, pods) = agent(dir.path(), Backend::Iptables).await;
    pods.set_namespace("default", mode("ambient")).await.unwrap();
    pods.upsert_pod(pod_info(&ok, true)).await.unwrap();
    pods.upsert_pod(pod_info(&no, true)).await.unwrap();
    pods.synced().await.unwrap();
    agent.wait_for("uid-ok", PodState::Enrolled, WAIT).await.unwrap();

    // 2.5 s at 100 ms ticks: 25 chances to resend.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut adds: BTreeMap<String, usize> = BTreeMap::new();
    while let Ok(seen) = ztunnel.seen.try_recv() {
        if let Seen::Add { uid, .. } = seen {
            *adds.entry(uid).or_default() += 1;
        }
    }
    assert_eq!(adds.get("uid-ok"), Some(&1), "{adds:?}");
    let refused = adds.get("uid-no").copied().unwrap_or_default();
    // At 0 s, 1 s and 3 s (the first try may fall in the snapshot).
    assert!((1..=3).contains(&refused), "refused pod re-added {refused} times: {adds:?}");
    assert_eq!(agent.state("uid-no"), Some(PodState::Pending));
}
