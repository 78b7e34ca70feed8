//! Small Kubernetes objects tests create on a [`crate::KubeHarness`].

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::ObjectMeta;

/// Metadata with a name and, for namespaced objects, a namespace.
pub fn meta(name: &str, ns: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: ns.map(str::to_owned),
        ..ObjectMeta::default()
    }
}

/// A pod that never runs (there is no kubelet): one `app` container, the
/// service account `sa`, and `node` when it is already scheduled.
pub fn app_pod(ns: &str, name: &str, sa: &str, node: Option<&str>) -> Pod {
    Pod {
        metadata: meta(name, Some(ns)),
        spec: Some(PodSpec {
            service_account_name: Some(sa.to_owned()),
            node_name: node.map(str::to_owned),
            containers: vec![Container {
                name: "app".to_owned(),
                image: Some("example.invalid/app".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}
