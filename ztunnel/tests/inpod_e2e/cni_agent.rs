//! No plaintext leak while the CNI agent enrols and un-enrols a pod.
//!
//! The agent (`mesh_cni::agent`, local pod source, iptables) takes over the
//! client pod on node a and hands it over ZDS to node a's in-process
//! ztunnel (a real `ZdsServer` bridged to `PodProxies`, as ztunnel's app
//! does). The pod is enrolled and un-enrolled over and over by relabelling
//! it while a client in it keeps connecting to the server pod's app port
//! on node b. Node b's netns records, in an nftables dynamic set, the
//! source port of every packet it forwards to the server's plaintext port
//! (HBONE goes to 15008 and is not recorded).
//!
//! The guarantee tested: no packet of any connection the client opened
//! while the agent reported the pod Enrolled (read before `connect()` and
//! again after it returned, the same enrolled window both times, and
//! un-enrolment not yet started) ever crossed to node b towards the
//! plaintext port, for the whole run, including connections kept open
//! across the un-enrolment that follows. Connections opened while the pod
//! was out of the mesh must be seen crossing in plaintext (the detector
//! works), and enrolled ones must have gone through ztunnel (echoed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mesh_cni::agent::{Agent, AgentConfig, Labels, LocalPods, PodInfo, PodState};
use mesh_cni::zds::{ZdsRequest, ZdsServer};
use mesh_cni::{Backend, CaptureConfig};
use mesh_netns::Netns;
use ztunnel::inpod::PodWorkload;

use super::prefix;
use crate::harness::*;

const OUT: u64 = 0;
const ENROLLED: u64 = 1;
const LEAVING: u64 = 2;
const CYCLES: u64 = 5;
const ZDS_UID: &str = "0b5e1c2d-client";

/// One connection attempt of the client.
#[derive(Debug)]
struct Attempt {
    sport: u16,
    /// The phase word (generation << 2 | phase) before `connect()` and
    /// after it returned.
    before: u64,
    after: u64,
    echoed: bool,
}

fn phase_of(word: u64) -> u64 {
    word & 3
}

/// Records the source address and port of every TCP packet node `netns`
/// forwards to `dst:port`.
fn record_sources(netns: &str, dst: std::net::Ipv4Addr, port: u16) {
    let script = format!(
        "table ip leak {{
            set seen {{ type ipv4_addr . inet_service; flags dynamic; size 65535; }}
            chain forwarded {{
                type filter hook forward priority -200; policy accept;
                ip daddr {dst} tcp dport {port} add @seen {{ ip saddr . tcp sport }}
            }}
        }}"
    );
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

/// The (source address, source port) pairs recorded by [`record_sources`].
fn recorded_sources(netns: &str) -> Vec<(String, u16)> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-j", "list", "set", "ip", "leak", "seen"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let set = json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|item| item.get("set"))
        .expect("the set");
    let elems = set.get("elem").and_then(|e| e.as_array()).cloned().unwrap_or_default();
    elems
        .iter()
        .map(|e| {
            let concat = e.get("concat").or_else(|| e["elem"]["val"].get("concat"));
            let pair = concat.and_then(|c| c.as_array()).expect("an address . port element");
            let port = u16::try_from(pair[1].as_u64().expect("a port")).unwrap();
            (pair[0].as_str().expect("an address").to_owned(), port)
        })
        .collect()
}

/// One connection from source port `sport`: connect, keep writing a byte
/// every 10 ms for `keep` (or until a write fails), half-close, read the
/// echo.
fn connect_once(sport: u16, target: SocketAddr, phase: &AtomicU64, keep: Duration) -> Attempt {
    use std::io::{Read, Write};
    let before = phase.load(Ordering::SeqCst);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.bind(&SocketAddr::from(([0, 0, 0, 0], sport)).into()).unwrap();
    let connected = socket.connect_timeout(&target.into(), Duration::from_secs(2));
    let after = phase.load(Ordering::SeqCst);
    let mut echoed = false;
    if connected.is_ok() {
        let mut stream: std::net::TcpStream = socket.into();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut sent = b"ping".to_vec();
        let mut ok = stream.write_all(b"ping").is_ok();
        let until = std::time::SystemTime::now() + keep;
        while ok && std::time::SystemTime::now() < until {
            std::thread::sleep(Duration::from_millis(10));
            ok = stream.write_all(b".").is_ok();
            sent.push(b'.');
        }
        if ok && stream.shutdown(std::net::Shutdown::Write).is_ok() {
            let mut back = Vec::new();
            echoed = stream.read_to_end(&mut back).is_ok() && back == sent;
        }
    }
    Attempt { sport, before, after, echoed }
}

fn pod_info(pod: &mesh_netns::PodHandle, mode: &str) -> PodInfo {
    PodInfo {
        uid: ZDS_UID.into(),
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        service_account: "client".into(),
        labels: [("istio.io/dataplane-mode".to_owned(), mode.to_owned())].into(),
        containers: vec!["app".into()],
        ips: vec![pod.ip.into()],
        netns: Some(std::path::Path::new("/var/run/netns").join(&pod.netns_name)),
        ..PodInfo::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_crosses_nodes_while_the_agent_keeps_the_pod_enrolled_iptables() {
    enrol_and_unenrol_under_traffic(Backend::Iptables, "il").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_crosses_nodes_while_the_agent_keeps_the_pod_enrolled_nftables() {
    enrol_and_unenrol_under_traffic(Backend::Nftables, "in").await;
}

#[allow(clippy::print_stdout, reason = "the run's numbers, shown with --nocapture")]
async fn enrol_and_unenrol_under_traffic(backend: Backend, tag: &str) {
    let mesh = mesh(&prefix(tag)).await;
    // The agent takes the client pod over from the harness.
    mesh.a.proxies.remove(&uid("client"));
    Backend::Iptables.remove(&mesh.client.netns().unwrap(), &CaptureConfig::default()).unwrap();
    let node_b = mesh.node_netns("b");
    record_sources(&node_b, mesh.server.ip, APP_PORT);
    echo_all(&mesh.server, APP_PORT);

    let dir = tempfile::tempdir().unwrap();
    let zds = dir.path().join("ztunnel.sock");
    let (_server, mut events) = ZdsServer::bind(&zds, 16).unwrap();
    let mut config = AgentConfig::new(&zds);
    config.backend = backend;
    config.tick = Duration::from_millis(50);
    let (source, pods) = LocalPods::new();
    let agent = Agent::start(config, source).await.unwrap();
    pods.set_namespace("default", Labels::new()).await.unwrap();
    pods.upsert_pod(pod_info(&mesh.client, "none")).await.unwrap();
    pods.synced().await.unwrap();

    // Node a's ztunnel side of ZDS.
    let bridge = async {
        while let Some(event) = events.recv().await {
            let result = match event.request {
                ZdsRequest::Add { ref uid, ref info, ref netns } => {
                    let identity = format!(
                        "spiffe://cluster.local/ns/{}/sa/{}",
                        info.namespace, info.service_account
                    );
                    let workload = PodWorkload {
                        uid: crate::harness::uid(&info.name),
                        identity: identity.parse().unwrap(),
                    };
                    let netns = Netns::from_fd(netns.try_clone().unwrap());
                    mesh.a.proxies.add(uid, workload, &netns).await.map_err(|e| e.to_string())
                }
                ZdsRequest::Del { ref uid } => {
                    mesh.a.proxies.remove(uid);
                    Ok(())
                }
                _ => Ok(()),
            };
            event.ack(result);
        }
    };

    let phase = Arc::new(AtomicU64::new(OUT));
    let stop = Arc::new(AtomicBool::new(false));
    let target = SocketAddr::from((mesh.server.ip, APP_PORT));
    let client = {
        let (phase, stop) = (Arc::clone(&phase), Arc::clone(&stop));
        mesh.client
            .netns()
            .unwrap()
            .spawn("leak-client", move || {
                let mut attempts = Vec::new();
                let mut sport = 21_000u16;
                while !stop.load(Ordering::SeqCst) {
                    attempts.push(connect_once(sport, target, &phase, Duration::ZERO));
                    sport += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                attempts
            })
            .unwrap()
    };

    // One connection per cycle opened while enrolled and kept writing
    // across the un-enrolment that follows.
    let straddlers = std::sync::Mutex::new(Vec::new());
    let driver = async {
        let wait = Duration::from_secs(10);
        tokio::time::sleep(Duration::from_millis(300)).await;
        for generation in 1..=CYCLES {
            pods.upsert_pod(pod_info(&mesh.client, "ambient")).await.unwrap();
            agent.wait_for(ZDS_UID, PodState::Enrolled, wait).await.unwrap();
            phase.store(generation << 2 | ENROLLED, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(250)).await;
            let seen_phase = Arc::clone(&phase);
            let sport = 30_000 + u16::try_from(generation).unwrap();
            let keep = Duration::from_millis(1000);
            let straddler = mesh
                .client
                .netns()
                .unwrap()
                .spawn("straddler", move || connect_once(sport, target, &seen_phase, keep));
            straddlers.lock().unwrap().push(straddler.unwrap());
            tokio::time::sleep(Duration::from_millis(250)).await;
            phase.store(generation << 2 | LEAVING, Ordering::SeqCst);
            pods.upsert_pod(pod_info(&mesh.client, "none")).await.unwrap();
            agent.wait_for(ZDS_UID, PodState::Outside, wait).await.unwrap();
            phase.store(generation << 2 | OUT, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stop.store(true, Ordering::SeqCst);
    };
    tokio::select! {
        () = bridge => panic!("the ZDS server stopped"),
        () = driver => {}
    }
    let straddlers = straddlers.into_inner().unwrap();
    let attempts = tokio::task::spawn_blocking(move || {
        let mut attempts = client.join().unwrap().unwrap();
        attempts.extend(straddlers.into_iter().map(|s| s.join().unwrap().unwrap()));
        attempts
    })
    .await
    .unwrap();
    // Late packets of the last connections have crossed by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sources = recorded_sources(&node_b);
    let seen: Vec<u16> = sources.iter().map(|(_, port)| *port).collect();

    let steady = |p: u64| {
        attempts
            .iter()
            .filter(move |a| a.before == a.after && phase_of(a.before) == p)
            .collect::<Vec<_>>()
    };
    let enrolled = steady(ENROLLED);
    let out = steady(OUT);
    let leaked: Vec<&&Attempt> = enrolled.iter().filter(|a| seen.contains(&a.sport)).collect();
    assert!(
        leaked.is_empty(),
        "plaintext from enrolled connections: {leaked:?}; recorded (source, port): {sources:?}"
    );
    let client_ip = mesh.client.ip.to_string();
    assert!(sources.iter().all(|(ip, _)| *ip == client_ip), "only the client pod: {sources:?}");
    assert!(enrolled.len() >= 20, "enough enrolled connections: {}", enrolled.len());
    let through_ztunnel = enrolled.iter().filter(|a| a.echoed).count();
    assert!(
        through_ztunnel >= 10,
        "enrolled connections echoed through ztunnel: {through_ztunnel}"
    );
    let plain_seen = out.iter().filter(|a| seen.contains(&a.sport)).count();
    assert!(
        plain_seen >= 5,
        "out-of-mesh connections seen in plaintext: {plain_seen} of {}",
        out.len()
    );
    println!(
        "{backend:?}: {} attempts: {} enrolled ({through_ztunnel} echoed through ztunnel), {} out of the mesh \
         ({plain_seen} seen in plaintext), {} ports recorded on node b",
        attempts.len(),
        enrolled.len(),
        out.len(),
        seen.len()
    );
    agent.shutdown().await;
}
