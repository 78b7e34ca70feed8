//! The plugin's own enrolment check, for when the node agent cannot be
//! asked: the Pod and its Namespace from the API server, judged by the
//! rule the agent and istiod share ([`crate::agent::enrolment`]).
//!
//! upstream: istio-cni's plugin reads the pod and its namespace with the
//! kubeconfig from its conflist (`kubernetes.kubeconfig`) and only pods
//! that are ambient-enabled need the node agent; others are passed.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::agent::kube::pod_info;
use crate::agent::{Enrolment, enrolment};
use crate::report::SandboxReport;

/// Whether the sandbox's pod would be enrolled, asked of the API server
/// with `kubeconfig`, within `timeout`.
pub(crate) fn would_enrol(
    kubeconfig: &Path,
    report: &SandboxReport,
    timeout: Duration,
) -> Result<bool, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting a runtime: {e}"))?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, ask_api(kubeconfig, report))
            .await
            .map_err(|_| format!("no answer from the API server within {timeout:?}"))?
    })
}

async fn ask_api(kubeconfig: &Path, report: &SandboxReport) -> Result<bool, String> {
    let at = kubeconfig.display();
    let file = Kubeconfig::read_from(kubeconfig).map_err(|e| format!("reading {at}: {e}"))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig {at}: {e}"))?;
    let client = kube::Client::try_from(config).map_err(|e| format!("kube client: {e}"))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &report.namespace);
    let pod = pods
        .get(&report.name)
        .await
        .map_err(|e| format!("reading pod {}/{}: {e}", report.namespace, report.name))?;
    let namespace = Api::<Namespace>::all(client)
        .get_opt(&report.namespace)
        .await
        .map_err(|e| format!("reading namespace {}: {e}", report.namespace))?;
    let mut info = pod_info(&pod)
        .ok_or_else(|| format!("pod {}/{} lacks a uid", report.namespace, report.name))?;
    // The sandbox's IPs are not in the pod's status yet at ADD time.
    if info.ips.is_empty() {
        info.ips.clone_from(&report.ips);
    }
    let labels = namespace.and_then(|ns| ns.metadata.labels).unwrap_or_default();
    Ok(enrolment(Some(&labels), &info) == Enrolment::Enrolled)
}
