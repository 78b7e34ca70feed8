//! Item 2: a hostile namespace owner writes ServiceEntries in `evil` whose
//! addresses cover the pod CIDRs (10.244.0.0/16, and node-b's
//! 10.244.1.0/24), resolved STATIC to an attacker pod (by workloadSelector
//! and by endpoint address). Hardened: a Pod's IP belongs to the pod, so
//! the client still reaches the real server by pod IP and by Service name,
//! and the attacker receives none of it.

use std::time::Duration;

use mesh_e2e::fixtures::{identity_server, idle_pod, join, namespace, service};
use mesh_e2e::local_mesh::{LocalMesh, wait_for};

/// The CIDR local mode allocates pod addresses from (10.244.<node>.0/24).
const POD_CIDR: &str = "10.244.0.0/16";

fn capture_by_selector() -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: capture\n  namespace: evil\n\
         spec:\n  hosts: [capture.evil.internal]\n  addresses: [{POD_CIDR}]\n\
         \x20 ports: [{{number: 8080, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n\
         \x20 location: MESH_INTERNAL\n  workloadSelector: {{labels: {{app: attacker}}}}\n"
    )
}

fn capture_by_endpoint(cidr: &str, attacker_ip: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: capture-endpoint\n  namespace: evil\n\
         spec:\n  hosts: [capture-endpoint.evil.internal]\n  addresses: [{cidr}]\n\
         \x20 ports: [{{number: 8080, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n\
         \x20 location: MESH_INTERNAL\n  endpoints: [{{address: {attacker_ip}}}]\n"
    )
}

#[test]
fn a_service_entry_covering_the_pod_cidr_does_not_capture_pod_traffic() {
    let mesh = LocalMesh::new(
        "as",
        &[
            ("namespaces.yaml", &join(&[namespace("demo", true), namespace("evil", true)])),
            (
                "demo.yaml",
                &join(&[
                    idle_pod("demo", "client", "node-a", "client"),
                    identity_server("demo", "server", "node-b", "server", &[("app", "server")]),
                    service("demo", "server", "server", 80),
                ]),
            ),
            (
                "evil.yaml",
                &join(&[
                    identity_server(
                        "evil",
                        "attacker",
                        "node-b",
                        "attacker",
                        &[("app", "attacker")],
                    ),
                    capture_by_selector(),
                    // Proof that istiod and the ztunnels took this file.
                    service("evil", "marker", "attacker", 8080),
                ]),
            ),
        ],
    );
    mesh.up();
    let server_ip = mesh.pod_ip("demo", "server");
    let attacker_ip = mesh.pod_ip("evil", "attacker");
    // The second attacker entry, by endpoint address, on node-b's pod CIDR
    // (a longer prefix than the first), with its own proof of arrival.
    mesh.write(
        "evil-endpoint.yaml",
        &join(&[
            capture_by_endpoint("10.244.1.0/24", &attacker_ip),
            service("evil", "marker2", "attacker", 8080),
        ]),
    );
    for marker in ["marker", "marker2"] {
        let url = format!("http://{marker}.evil.svc.cluster.local:8080/{marker}");
        wait_for(&format!("the client to reach evil/{marker}"), Duration::from_secs(30), || {
            match mesh.http_get("demo", "client", &url, &[]) {
                Ok(body) if body.starts_with("served-by=attacker") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }

    let mut achieved = Vec::new();
    for i in 0..3 {
        for url in [
            format!("http://{server_ip}:8080/for-server-ip-{i}"),
            format!("http://server.demo.svc.cluster.local/for-server-svc-{i}"),
        ] {
            match mesh.http_get("demo", "client", &url, &[]) {
                Ok(body) if body.starts_with("served-by=server ") => {}
                Ok(body) => achieved.push(format!("client -> {url} was answered by: {body}")),
                Err(e) => achieved.push(format!("client -> {url} failed: {e}")),
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let captured: Vec<String> = mesh
        .pod_log("evil", "attacker")
        .lines()
        .filter(|l| l.contains("for-server"))
        .map(str::to_owned)
        .collect();
    if !captured.is_empty() {
        achieved.push(format!("the attacker pod evil/attacker received: {captured:#?}"));
    }
    assert!(
        achieved.is_empty(),
        "ServiceEntries evil/capture ({POD_CIDR}, workloadSelector app=attacker) and \
         evil/capture-endpoint (10.244.1.0/24, endpoint {attacker_ip}) captured traffic to the \
         server pod {server_ip}:\n- {}",
        achieved.join("\n- ")
    );
}
