//! Users' existing Istio and Gateway API manifests apply unchanged to a real
//! kube-apiserver with our CRDs (strict field validation, so an unknown field
//! would fail), and invalid ones are rejected by the schema or its CEL rules.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a broken assumption is the failure report"
)]

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams, ValidationDirective};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use mesh_test_support::KubeHarness;

const DEFAULT_NAMESPACE: &str = "user-manifests";

fn manifests(dir: &str) -> Vec<(PathBuf, DynamicObject)> {
    let dir = mesh_test_support::repo_path("helm/base/tests").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            if value.is_null() {
                continue;
            }
            let obj: DynamicObject = serde_json::from_value(value)
                .unwrap_or_else(|e| panic!("{}: not a Kubernetes object: {e}", file.display()));
            out.push((file.clone(), obj));
        }
    }
    assert!(!out.is_empty(), "no manifests in {}", dir.display());
    out
}

async fn ensure_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await.unwrap().is_none() {
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &ns).await.unwrap();
    }
}

/// Server-side apply with strict field validation, like
/// `kubectl apply --server-side --validate=strict`.
async fn apply(
    client: &kube::Client,
    discovery: &Discovery,
    obj: &DynamicObject,
) -> Result<(), kube::Error> {
    let types = obj.types.as_ref().expect("manifest has apiVersion and kind");
    let gvk = GroupVersionKind::try_from(types).expect("parsable apiVersion");
    let (resource, caps) = discovery
        .resolve_gvk(&gvk)
        .unwrap_or_else(|| panic!("the API server does not serve {gvk:?}"));
    let name = obj.metadata.name.clone().expect("manifest has a name");
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            let ns = obj.metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
            ensure_namespace(client, ns).await;
            Api::namespaced_with(client.clone(), ns, &resource)
        }
    };
    let params = PatchParams::apply("mesh-e2e").validation(ValidationDirective::Strict);
    api.patch(&name, &params, &Patch::Apply(obj)).await.map(drop)
}

#[tokio::test]
async fn valid_user_manifests_apply_unchanged_and_invalid_ones_are_rejected() {
    let harness =
        KubeHarness::start().await.unwrap_or_else(|e| panic!("start kube-apiserver: {e}"));
    let client = harness.client();
    let discovery = Discovery::new(client.clone()).run().await.expect("API discovery");

    let valid = manifests("examples");
    for (file, obj) in &valid {
        if let Err(e) = apply(&client, &discovery, obj).await {
            panic!("{} ({:?}) was rejected: {e}", file.display(), obj.metadata.name);
        }
    }

    let invalid = manifests("invalid");
    for (file, obj) in &invalid {
        match apply(&client, &discovery, obj).await {
            Ok(()) => panic!("{} was accepted but must be rejected", file.display()),
            Err(kube::Error::Api(status)) => {
                assert_eq!(
                    status.code,
                    422,
                    "{}: expected 422 Invalid, got {status:?}",
                    file.display()
                );
            }
            Err(other) => panic!("{}: unexpected error {other}", file.display()),
        }
    }
    assert!(
        valid.len() >= 10 && invalid.len() >= 3,
        "{} valid, {} invalid",
        valid.len(),
        invalid.len()
    );
}
