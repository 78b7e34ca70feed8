//! Item 3: a WorkloadEntry in a namespace outside the mesh claims the
//! server pod's IP. Hardened: the pod keeps its IP, so the client's
//! traffic to it still goes over mutual TLS (node-b's ztunnel sees the
//! client's identity) and never in plaintext: a bearer token the client
//! sends is never visible on the fabric between the nodes, neither while
//! the entry squats nor after it is deleted (when the pod must still be
//! reachable). Also the reverse order: an entry that claims an address
//! before the pod that gets it exists does not take it from that pod.

use std::time::Duration;

use mesh_e2e::fixtures::{identity_server, idle_pod, join, namespace, service};
use mesh_e2e::local_mesh::{LocalMesh, metric_sum, wait_for};
use mesh_e2e::sniff::Sniffer;

const REQUESTS: usize = 3;

fn squatter(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  namespace: squat\n\
         spec:\n  address: {ip}\n  labels: {{app: squatter}}\n  serviceAccount: squatter\n"
    )
}

/// Mutual-TLS connections node-b's ztunnel accepted from the client for
/// pod `server`.
fn mtls_from_client(mesh: &LocalMesh, server: &str) -> f64 {
    let destination = format!("destination_workload=\"{server}\"");
    metric_sum(
        &mesh.ztunnel_metrics("node-b"),
        "istio_tcp_connections_opened_total",
        &[
            "reporter=\"destination\"",
            "source_principal=\"spiffe://cluster.local/ns/demo/sa/client\"",
            &destination,
            "connection_security_policy=\"mutual_tls\"",
        ],
    )
}

/// Waits for Service demo/`marker` (written in the same file as the change
/// under test) to answer: istiod and the client's ztunnel have that file.
fn wait_marker(mesh: &LocalMesh, marker: &str) {
    let url = format!("http://{marker}.demo.svc.cluster.local:8080/{marker}");
    wait_for(&format!("the client to reach demo/{marker}"), Duration::from_secs(30), || match mesh
        .http_get("demo", "client", &url, &[])
    {
        Ok(body) if body.starts_with("served-by=server") => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

/// Sends [`REQUESTS`] requests with a bearer token from the client to pod
/// `demo/<server>`'s IP; returns what went wrong: a wrong or failed
/// answer, the token seen on the wire, too few mutual-TLS connections on
/// node-b.
fn check_reached_over_mtls(mesh: &LocalMesh, server: &str, phase: &str) -> Vec<String> {
    let server_ip = mesh.pod_ip("demo", server);
    let token = format!("bearer-{phase}-{}-{}", std::process::id(), nanos());
    let sniffer = Sniffer::start(&mesh.fabric_netns(), &token);
    let mtls_before = mtls_from_client(mesh, server);
    let mut wrong = Vec::new();
    for i in 0..REQUESTS {
        let url = format!("http://{server_ip}:8080/{phase}-{i}");
        let auth = format!("Authorization: Bearer {token}");
        match mesh.http_get("demo", "client", &url, &[&auth]) {
            Ok(body) if body.starts_with(&format!("served-by={server} ")) => {}
            Ok(body) => wrong.push(format!("{phase}: client -> {url} was answered by: {body}")),
            Err(e) => wrong.push(format!("{phase}: client -> {url} failed: {e}")),
        }
    }
    let seen = sniffer.finish();
    if !seen.is_empty() {
        wrong.push(format!(
            "{phase}: the client's bearer token crossed the fabric in plaintext ({} frames), e.g. {}",
            seen.len(),
            seen.first().map(String::as_str).unwrap_or_default()
        ));
    }
    let mtls = mtls_from_client(mesh, server) - mtls_before;
    #[allow(clippy::cast_precision_loss, reason = "a handful of requests")]
    if mtls < REQUESTS as f64 {
        wrong.push(format!(
            "{phase}: node-b's ztunnel accepted only {mtls} mutual-TLS connections from \
             spiffe://cluster.local/ns/demo/sa/client for demo/{server}, of {REQUESTS} requests"
        ));
    }
    wrong
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

#[test]
fn a_workload_entry_cannot_squat_a_pod_ip() {
    let mesh = LocalMesh::new(
        "aw",
        &[
            ("namespaces.yaml", &join(&[namespace("demo", true), namespace("squat", false)])),
            (
                "demo.yaml",
                &join(&[
                    idle_pod("demo", "client", "node-a", "client"),
                    identity_server("demo", "server", "node-b", "server", &[("app", "server")]),
                ]),
            ),
        ],
    );
    mesh.up();
    let server_ip = mesh.pod_ip("demo", "server");

    // Before the attack: the checks themselves hold.
    let baseline = check_reached_over_mtls(&mesh, "server", "baseline");
    assert!(baseline.is_empty(), "the mesh works before the attack: {baseline:#?}");

    let mut achieved = Vec::new();
    // The entry squats the running pod's IP.
    mesh.write(
        "squat.yaml",
        &join(&[squatter("squatter", &server_ip), service("demo", "marker1", "server", 8080)]),
    );
    wait_marker(&mesh, "marker1");
    achieved.extend(check_reached_over_mtls(&mesh, "server", "squatted"));

    // The entry's file is deleted (before the next marker is written).
    mesh.remove("squat.yaml");
    mesh.write("marker2.yaml", &service("demo", "marker2", "server", 8080));
    wait_marker(&mesh, "marker2");
    achieved.extend(check_reached_over_mtls(&mesh, "server", "deleted"));

    // The reverse order: an entry claims the address the next pod on
    // node-b will get (10.244.1.<pods on node-b + 2>) before that pod
    // exists; the pod still owns it once it runs.
    let on_node_b = mesh.status()["pods"]
        .as_array()
        .map(|pods| pods.iter().filter(|p| p["node"] == "node-b").count())
        .unwrap_or_default();
    let next_ip = format!("10.244.1.{}", on_node_b + 2);
    mesh.write(
        "squat-ahead.yaml",
        &join(&[squatter("squatter-ahead", &next_ip), service("demo", "marker3", "server", 8080)]),
    );
    wait_marker(&mesh, "marker3");
    mesh.write(
        "server2.yaml",
        &identity_server("demo", "server2", "node-b", "server2", &[("app", "server2")]),
    );
    mesh.pod_ready("demo", "server2", Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let server2_ip = mesh.pod_ip("demo", "server2");
    assert_eq!(server2_ip, next_ip, "local mode gives the next pod on node-b the next address");
    achieved.extend(check_reached_over_mtls(&mesh, "server2", "squatted-ahead"));

    assert!(
        achieved.is_empty(),
        "WorkloadEntries squat/squatter (address {server_ip} of pod demo/server) and \
         squat/squatter-ahead (address {next_ip}, before pod demo/server2 took it), in a namespace \
         outside the mesh, took the pods' IPs:\n- {}",
        achieved.join("\n- ")
    );
}
