//! Item 4: a config author adds an invalid port (`ports: ["http"]`) to the
//! server's only ALLOW policy. Hardened: the policy is not dropped (an
//! ALLOW keeps its scope with rules that match nothing), so the intruder
//! stays denied, and istiod reports what was wrong in the policy's status.

use std::time::Duration;

use tokio::time::Instant;

use mesh_e2e::fixtures::{identity_server, idle_pod, join, namespace, service};
use mesh_e2e::local_mesh::{LocalMesh, wait_for};
use serde_json::Value;

const POLICY: &str = "AuthorizationPolicy demo/server-allow-client";

fn policy(invalid_port: bool) -> String {
    let to =
        if invalid_port { "\n    to:\n    - operation:\n        ports: [\"http\"]" } else { "" };
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: server-allow-client\n  namespace: demo\n\
         spec:\n  selector:\n    matchLabels: {{app: server}}\n  action: ALLOW\n  rules:\n\
         \x20 - from:\n    - source:\n        principals: [cluster.local/ns/demo/sa/client]{to}\n"
    )
}

/// `GET` the server's Service from `pod`: whether the server answered.
fn reaches(mesh: &LocalMesh, pod: &str) -> Result<String, String> {
    mesh.http_get("demo", pod, "http://server.demo.svc.cluster.local/", &[])
}

/// istiod's conditions for the policy, when it reports any.
fn policy_conditions(mesh: &LocalMesh) -> Option<Value> {
    let errors = mesh.istiod_config_errors();
    errors["objects"]
        .as_array()?
        .iter()
        .find(|o| o["object"] == POLICY)
        .map(|o| o["conditions"].clone())
}

#[test]
fn an_allow_policy_with_an_invalid_port_does_not_fail_open() {
    let mesh = LocalMesh::new(
        "ap",
        &[
            ("namespace.yaml", &namespace("demo", true)),
            (
                "pods.yaml",
                &join(&[
                    idle_pod("demo", "client", "node-a", "client"),
                    idle_pod("demo", "intruder", "node-a", "intruder"),
                    identity_server("demo", "server", "node-b", "server", &[("app", "server")]),
                    service("demo", "server", "server", 80),
                ]),
            ),
            ("policy.yaml", &policy(false)),
        ],
    );
    mesh.up();
    // Before the attack the policy holds: client in, intruder out.
    wait_for("the client to reach the server", Duration::from_secs(20), || {
        reaches(&mesh, "client")
            .and_then(|b| if b.starts_with("served-by=server") { Ok(()) } else { Err(b) })
    });
    let denied = reaches(&mesh, "intruder");
    assert!(denied.is_err(), "the valid policy denies the intruder: {denied:?}");

    mesh.write("policy.yaml", &policy(true));
    // istiod took the edit and says what is wrong with it.
    let conditions = wait_for(
        &format!("istiod to report a problem with {POLICY} in /debug/config_errors"),
        Duration::from_secs(20),
        || {
            policy_conditions(&mesh)
                .filter(|c| c.to_string().contains("http"))
                .ok_or_else(|| format!("{:#}", mesh.istiod_config_errors()))
        },
    );
    // Give the ztunnels time to receive whatever istiod now sends, probing
    // all along: the intruder must never get in.
    let until = Instant::now() + Duration::from_secs(6);
    let mut probes = 0;
    while Instant::now() < until {
        probes += 1;
        if let Ok(body) = reaches(&mesh, "intruder") {
            panic!(
                "the ALLOW policy failed open: after `ports: [\"http\"]` was added to {POLICY} \
                 (istiod's conditions: {conditions}), demo/intruder (sa intruder) reached the server \
                 on probe {probes}: {body}"
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!(
        "{POLICY} with ports [http]: intruder denied on all {probes} probes; conditions {conditions}"
    );
}
