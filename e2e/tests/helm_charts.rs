//! The charts pass real helm's lint and template, and `helm install` of the
//! base chart into a real kube-apiserver creates every CRD.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken assumption is the failure report"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use mesh_test_support::{KubeHarness, PeerBinary, crd_dir};

fn helm() -> PathBuf {
    PeerBinary::Helm.path().unwrap_or_else(|e| panic!("{e}"))
}

fn chart(name: &str) -> PathBuf {
    mesh_test_support::repo_path("helm").join(name)
}

/// Runs helm with a private home so the user's helm config never leaks in.
fn run_helm(args: &[&str], home: &Path) -> String {
    let out = Command::new(helm())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("run helm");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "helm {args:?} failed:\n{text}");
    text
}

fn crd_file_count() -> usize {
    std::fs::read_dir(crd_dir())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "yaml"))
        .count()
}

#[test]
fn base_chart_lints_and_templates() {
    let home = tempfile::tempdir().unwrap();
    let base = chart("base");
    let base = base.to_str().unwrap();
    let lint = run_helm(&["lint", "--strict", base], home.path());
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let rendered = run_helm(&["template", "base", base, "--include-crds"], home.path());
    let crds = rendered.matches("kind: CustomResourceDefinition").count();
    assert_eq!(crds, crd_file_count(), "every CRD file renders once");
}

#[tokio::test]
async fn helm_install_of_the_base_chart_creates_every_crd() {
    let harness =
        KubeHarness::start_bare().await.unwrap_or_else(|e| panic!("start kube-apiserver: {e}"));
    let crds: Api<CustomResourceDefinition> = Api::all(harness.client());
    let before = crds.list(&Default::default()).await.unwrap().items.len();
    assert_eq!(before, 0, "a bare harness starts without CRDs");
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = harness.kubeconfig().to_str().unwrap().to_owned();
    let base = chart("base");
    run_helm(
        &[
            "install",
            "mesh-base",
            base.to_str().unwrap(),
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            "istio-system",
            "--create-namespace",
            "--wait",
            "--timeout",
            "60s",
        ],
        home.path(),
    );
    let installed = crds.list(&Default::default()).await.unwrap().items.len();
    assert_eq!(installed, crd_file_count());
    let status = run_helm(
        &["status", "mesh-base", "--kubeconfig", &kubeconfig, "--namespace", "istio-system"],
        home.path(),
    );
    assert!(status.contains("STATUS: deployed"), "{status}");
}
