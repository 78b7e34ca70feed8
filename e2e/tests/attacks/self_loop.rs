//! Item 1: an enrolled pod points connections at ztunnel's own listening
//! ports (127.0.0.1:15001, and its own pod IP on 15001, 15006 and 15008).
//! Hardened: ztunnel refuses them at once and counts them
//! (`istio_tcp_connections_failed_total`), its fd count stays flat, and it
//! keeps serving: traffic still flows and a new pod can still be enrolled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mesh_e2e::fixtures::{identity_server, idle_pod, join, namespace, service};
use mesh_e2e::local_mesh::{LocalMesh, fd_count, metric_sum};
use serde_json::Value;

const NS: &str = "loop";
/// Growth of ztunnel's open fds that still counts as flat.
const FD_SLACK: usize = 50;
/// How long a refused self-connection may take to be finished by the mesh.
const REFUSED_WITHIN_SECS: f64 = 3.0;

/// Run in the attacker pod: connects to each `host:port` argument, sends a
/// request and waits up to 8 s for the mesh to answer or close; prints one
/// JSON line per target with the outcome and the seconds it took.
const SELF_CONNECT: &str = "\
import json, socket, sys, time
for target in sys.argv[1:]:
    host, port = target.rsplit(':', 1)
    t0 = time.time()
    s = socket.socket()
    s.settimeout(8)
    try:
        s.connect((host, int(port)))
        s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')
        data = s.recv(1024)
        outcome = 'closed' if not data else 'answered %r' % data[:40]
    except socket.timeout:
        outcome = 'still open after 8 s'
    except ConnectionRefusedError:
        outcome = 'refused'
    except ConnectionResetError:
        outcome = 'reset'
    except OSError as e:
        outcome = 'error %s' % e
    s.close()
    print(json.dumps({'target': target, 'outcome': outcome, 'seconds': round(time.time() - t0, 2)}), flush=True)
";

/// `istio_tcp_connections_failed_total` summed over the samples that carry
/// a response flag (upstream labels a failed connection with one, not `-`).
fn failed_with_flag(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_failed_total{"))
        .filter(|l| l.contains("response_flags=\"") && !l.contains("response_flags=\"-\""))
        .map(|l| metric_sum(l, "istio_tcp_connections_failed_total", &[]))
        .sum()
}

#[test]
fn self_loops_to_ztunnel_ports_are_refused_counted_and_leave_ztunnel_serving() {
    let mesh = LocalMesh::new(
        "al",
        &[
            ("namespace.yaml", &namespace(NS, true)),
            (
                "pods.yaml",
                &join(&[
                    idle_pod(NS, "attacker", "node-a", "attacker"),
                    identity_server(NS, "server", "node-b", "server", &[("app", "server")]),
                    service(NS, "server", "server", 80),
                ]),
            ),
        ],
    );
    mesh.up();
    let server_url = format!("http://server.{NS}.svc.cluster.local/before");
    let before = mesh.http_get(NS, "attacker", &server_url, &[]);
    assert!(
        before.as_deref().is_ok_and(|b| b.starts_with("served-by=server")),
        "the mesh carries traffic before the attack: {before:?}"
    );

    let pid = mesh.ztunnel_pid("node-a").expect("node-a's ztunnel runs");
    let fds_before = fd_count(pid);
    let metrics_before = mesh.ztunnel_metrics("node-a");
    let failed_before = failed_with_flag(&metrics_before);

    // Sample ztunnel's fd count while the attack runs.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(fds_before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                    peak.fetch_max(dir.count(), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let own_ip = mesh.pod_ip(NS, "attacker");
    let targets: Vec<String> = std::iter::once("127.0.0.1:15001".to_owned())
        .chain([15001, 15006, 15008].map(|port| format!("{own_ip}:{port}")))
        .collect();
    let mut args = vec!["python3", "-c", SELF_CONNECT];
    args.extend(targets.iter().map(String::as_str));
    let attack = mesh.exec(NS, "attacker", &args);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let fds_after = fd_count(pid);
    let fds_peak = peak.load(Ordering::Relaxed).max(fds_after);

    // What the attack achieved, all of it, then one assertion.
    let mut achieved = Vec::new();
    let outcomes: Vec<Value> = String::from_utf8_lossy(&attack.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        outcomes.len(),
        targets.len(),
        "the probe reports every target: {}",
        mesh_e2e::local_mesh::text(&attack)
    );
    for o in &outcomes {
        let seconds = o["seconds"].as_f64().unwrap_or(f64::MAX);
        let outcome = o["outcome"].as_str().unwrap_or_default();
        if outcome.starts_with("still open") || seconds > REFUSED_WITHIN_SECS {
            achieved.push(format!(
                "{} was not refused: {outcome} after {seconds} s (ztunnel looped it into itself)",
                o["target"]
            ));
        }
    }
    if fds_peak > fds_before + FD_SLACK {
        achieved.push(format!(
            "node-a's ztunnel fd count grew from {fds_before} to {fds_peak} (after: {fds_after})"
        ));
    }
    let now_pid = mesh.ztunnel_pid("node-a");
    if now_pid != Some(pid) {
        achieved.push(format!("node-a's ztunnel died (pid {pid} -> {now_pid:?})"));
    }
    let metrics_after = mesh.try_ztunnel_metrics("node-a").unwrap_or_else(|e| {
        achieved.push(format!("node-a's ztunnel stopped answering on 15020: {e}"));
        String::new()
    });
    let failed_after = failed_with_flag(&metrics_after);
    // 127.0.0.1:15001, own IP :15001 and own IP :15006 are each a loop
    // ztunnel must refuse and count with a response flag (15008 may fail
    // earlier, in TLS).
    if failed_after < failed_before + 3.0 {
        let lines: Vec<&str> = metrics_after
            .lines()
            .filter(|l| l.starts_with("istio_tcp_connections_failed_total"))
            .collect();
        achieved.push(format!(
            "the refusals were not counted: istio_tcp_connections_failed_total with a response \
             flag {failed_before} -> {failed_after} (want +3); samples: {lines:?}"
        ));
    }

    // ztunnel keeps serving: traffic through node-a's ztunnel ...
    let after =
        mesh.http_get(NS, "attacker", &format!("http://server.{NS}.svc.cluster.local/after"), &[]);
    if !after.as_deref().is_ok_and(|b| b.starts_with("served-by=server")) {
        achieved.push(format!("traffic through node-a's ztunnel stopped: {after:?}"));
    }
    // ... and a pod added to node-a is still enrolled (ZDS still serves).
    mesh.write("late.yaml", &idle_pod(NS, "late", "node-a", "late"));
    match mesh.pod_ready(NS, "late", Duration::from_secs(25)) {
        Ok(()) => {
            let late = mesh.http_get(
                NS,
                "late",
                &format!("http://server.{NS}.svc.cluster.local/late"),
                &[],
            );
            if !late.as_deref().is_ok_and(|b| b.starts_with("served-by=server")) {
                achieved.push(format!(
                    "a pod enrolled after the attack cannot reach the server: {late:?}"
                ));
            }
        }
        Err(e) => achieved.push(format!("a new pod on node-a can no longer be enrolled: {e}")),
    }
    let fds_end = fd_count(pid);
    assert!(
        achieved.is_empty(),
        "the self-loop attack from loop/attacker worked:\n- {}\n(probe outcomes: {outcomes:?}; fds: \
         before {fds_before}, peak {fds_peak}, after {fds_after}, end {fds_end})",
        achieved.join("\n- ")
    );
    eprintln!(
        "self-loop: outcomes {outcomes:?}; ztunnel fds before {fds_before}, peak {fds_peak}, \
         after {fds_after}, end {fds_end}; failed_total {failed_before} -> {failed_after}"
    );
}
