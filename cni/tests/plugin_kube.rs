//! The plugin while the node agent is down, against a real kube-apiserver
//! (`KubeHarness`): a pod that would not be enrolled is ADDed with its
//! prevResult; a pod that would be enrolled fails (code 11). A missing
//! peer binary is a failure, never a skip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use mesh_test_support::KubeHarness;
use mesh_test_support::kube_objects::{app_pod, meta};
use serde_json::Value;

const MODE: &str = "istio.io/dataplane-mode";

fn conf(agent: &Path, kubeconfig: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "mesh-cni",
        "agent_socket": agent,
        "timeout_seconds": 10,
        "kubernetes": { "kubeconfig": kubeconfig },
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
            "ips": [{"address": "10.244.0.7/32", "interface": 0}],
        },
    })
    .to_string()
}

fn add(ns: &str, name: &str, conf: &str) -> (bool, Value) {
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-cni"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", format!("infra-{name}"))
        .env("CNI_NETNS", "/var/run/netns/does-not-matter")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let printed = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.success(), printed)
}

async fn namespace(client: &kube::Client, name: &str, mode: Option<&str>) {
    let mut metadata = meta(name, None);
    metadata.labels = mode.map(|m| BTreeMap::from([(MODE.to_owned(), m.to_owned())]));
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &Namespace { metadata, ..Namespace::default() })
        .await
        .unwrap();
}

async fn pod(client: &kube::Client, ns: &str, name: &str, mode: Option<&str>) {
    let mut pod = app_pod(ns, name, "sa", Some("n1"));
    pod.metadata.labels = mode.map(|m| BTreeMap::from([(MODE.to_owned(), m.to_owned())]));
    Api::<Pod>::namespaced(client.clone(), ns).create(&PostParams::default(), &pod).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_agent_only_pods_that_would_be_enrolled_fail() {
    let harness = KubeHarness::start_bare().await.unwrap_or_else(|e| panic!("kube harness: {e}"));
    let client = harness.client();
    namespace(&client, "plain", None).await;
    namespace(&client, "mesh", Some("ambient")).await;
    pod(&client, "plain", "web", None).await;
    pod(&client, "plain", "opted-in", Some("ambient")).await;
    pod(&client, "mesh", "app", None).await;
    pod(&client, "mesh", "opted-out", Some("none")).await;

    let dir = tempfile::tempdir().unwrap();
    let conf = conf(&dir.path().join("no-agent.sock"), harness.kubeconfig());
    let prev = serde_json::from_str::<Value>(&conf).unwrap()["prevResult"].clone();
    let cases = [
        ("plain", "web", false),
        ("plain", "opted-in", true),
        ("mesh", "app", true),
        ("mesh", "opted-out", false),
    ];
    for (ns, name, enrolled) in cases {
        let (ok, printed) = tokio::task::spawn_blocking({
            let conf = conf.clone();
            move || add(ns, name, &conf)
        })
        .await
        .unwrap();
        if enrolled {
            assert!(!ok, "{ns}/{name} must wait for the agent: {printed}");
            assert_eq!(printed["code"], 11, "{printed}");
            assert!(printed["details"].as_str().unwrap().contains("enrolled"), "{printed}");
        } else {
            assert!(ok, "{ns}/{name} needs no agent: {printed}");
            assert_eq!(printed, prev, "prevResult unchanged");
        }
    }

    // A pod the API server does not know fails closed.
    let (ok, printed) =
        tokio::task::spawn_blocking(move || add("plain", "ghost", &conf)).await.unwrap();
    assert!(!ok, "{printed}");
    assert_eq!(printed["code"], 11, "{printed}");
}
