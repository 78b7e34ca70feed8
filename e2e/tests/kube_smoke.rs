//! The real kube-apiserver harness works end to end with kube-rs: create a
//! namespace enrolled in ambient mode, read it back, and watch an update.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken assumption is the failure report"
)]

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use mesh_test_support::KubeHarness;
use tokio::time::timeout;

const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

fn label(ns: &Namespace) -> Option<&str> {
    ns.metadata.labels.as_ref()?.get(DATAPLANE_MODE).map(String::as_str)
}

#[tokio::test]
async fn namespace_enrolment_round_trips_through_a_real_apiserver() {
    let harness =
        KubeHarness::start().await.unwrap_or_else(|e| panic!("start etcd + kube-apiserver: {e}"));
    let namespaces: Api<Namespace> = Api::all(harness.client());

    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": "bookinfo", "labels": { DATAPLANE_MODE: "ambient" } }
    }))
    .unwrap();
    namespaces.create(&PostParams::default(), &ns).await.expect("create namespace");

    let fetched = namespaces.get("bookinfo").await.expect("read namespace back");
    assert_eq!(label(&fetched), Some("ambient"));
    assert!(fetched.metadata.uid.is_some(), "the API server assigns a uid");

    // Watch the namespace, then opt it out; the watch must deliver the change.
    let config = watcher::Config::default().fields("metadata.name=bookinfo");
    let mut changes = watcher(namespaces.clone(), config).applied_objects().boxed();
    let first = timeout(Duration::from_secs(20), changes.try_next())
        .await
        .expect("initial watch event in time")
        .expect("watch stream healthy")
        .expect("watch stream open");
    assert_eq!(label(&first), Some("ambient"));

    let patch = serde_json::json!({ "metadata": { "labels": { DATAPLANE_MODE: "none" } } });
    namespaces
        .patch("bookinfo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch namespace label");

    let updated = timeout(Duration::from_secs(20), async {
        while let Some(ns) = changes.try_next().await.expect("watch stream healthy") {
            if label(&ns) == Some("none") {
                return ns;
            }
        }
        panic!("watch stream ended before the update arrived");
    })
    .await
    .expect("update observed through the watch in time");
    assert_eq!(updated.metadata.name.as_deref(), Some("bookinfo"));
}

#[tokio::test]
async fn the_mesh_crds_are_installed_and_served() {
    let harness =
        KubeHarness::start().await.unwrap_or_else(|e| panic!("start etcd + kube-apiserver: {e}"));
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(harness.client());
    let names: Vec<String> = crds
        .list(&Default::default())
        .await
        .expect("list CRDs")
        .into_iter()
        .filter_map(|crd| crd.metadata.name)
        .collect();
    for expected in [
        "authorizationpolicies.security.istio.io",
        "peerauthentications.security.istio.io",
        "serviceentries.networking.istio.io",
        "workloadentries.networking.istio.io",
        "gateways.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
    ] {
        assert!(names.iter().any(|n| n == expected), "CRD {expected} missing; have {names:?}");
    }
}
