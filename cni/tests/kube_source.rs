//! The Kubernetes pod source against a real kube-apiserver (from
//! `KubeHarness`): only this node's pods, namespace labels as they change,
//! Synced after the first listing, label changes, deletions reported as
//! gone. A missing peer binary is a failure, never a skip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use mesh_cni::agent::kube::KubePods;
use mesh_cni::agent::{PodSource, SourceEvent};
use mesh_test_support::KubeHarness;
use mesh_test_support::kube_objects::{app_pod, meta};
use tokio::sync::mpsc;

async fn pod(client: &kube::Client, ns: &str, name: &str, node: &str) -> Pod {
    let pod = app_pod(ns, name, "sa", Some(node));
    Api::<Pod>::namespaced(client.clone(), ns).create(&PostParams::default(), &pod).await.unwrap()
}

/// The next event `want` accepts, skipping others, within 20 s.
async fn until(
    events: &mut mpsc::Receiver<SourceEvent>,
    mut want: impl FnMut(&SourceEvent) -> bool,
) -> SourceEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the event within 20 s")
            .expect("the source is running");
        if want(&event) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_this_nodes_pods_and_namespace_labels() {
    let harness = KubeHarness::start_bare().await.unwrap_or_else(|e| panic!("kube harness: {e}"));
    let client = harness.client();
    let namespaces = Api::<Namespace>::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace { metadata: meta("shop", None), ..Namespace::default() },
        )
        .await
        .unwrap();
    let mine = pod(&client, "shop", "mine", "n1").await;
    pod(&client, "shop", "elsewhere", "n2").await;
    let mine_uid = mine.metadata.uid.clone().unwrap();

    let (tx, mut events) = mpsc::channel(64);
    let source = KubePods { client: client.clone(), node_name: "n1".into() };
    let task = tokio::spawn(source.run(tx));

    // The first listing: this node's pod only, namespaces, then Synced.
    let mut pods = Vec::new();
    let mut saw_shop = false;
    loop {
        match until(&mut events, |_| true).await {
            SourceEvent::Pod(p) => pods.push(p),
            SourceEvent::Namespace { name, .. } if name == "shop" => saw_shop = true,
            SourceEvent::Synced => break,
            _ => {}
        }
    }
    assert!(saw_shop, "namespaces are listed before Synced");
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!((pods[0].uid.as_str(), pods[0].name.as_str()), (mine_uid.as_str(), "mine"));
    assert_eq!(pods[0].service_account, "sa");
    assert_eq!(pods[0].containers, ["app"]);

    // Relabelling the namespace is seen.
    let patch = serde_json::json!({"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}});
    namespaces.patch("shop", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let event =
        until(&mut events, |e| matches!(e, SourceEvent::Namespace { name, .. } if name == "shop"))
            .await;
    let SourceEvent::Namespace { labels, .. } = event else { unreachable!() };
    assert_eq!(labels.get("istio.io/dataplane-mode").map(String::as_str), Some("ambient"));

    // A pod label change, then the deletion.
    let pods_api = Api::<Pod>::namespaced(client.clone(), "shop");
    let patch = serde_json::json!({"metadata": {"labels": {"istio.io/dataplane-mode": "none"}}});
    pods_api.patch("mine", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let event =
        until(&mut events, |e| matches!(e, SourceEvent::Pod(p) if !p.labels.is_empty())).await;
    let SourceEvent::Pod(p) = event else { unreachable!() };
    assert_eq!(p.labels.get("istio.io/dataplane-mode").map(String::as_str), Some("none"));
    pods_api
        .delete("mine", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() })
        .await
        .unwrap();
    let gone = until(&mut events, |e| matches!(e, SourceEvent::PodGone { .. })).await;
    assert_eq!(gone, SourceEvent::PodGone { uid: mine_uid });
    task.abort();
}
