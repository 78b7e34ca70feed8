//! The chained CNI plugin (CNI spec 1.0): reports each pod sandbox to the
//! node agent and holds the runtime until the agent says the pod is
//! captured (or not a mesh pod). It fails closed for mesh pods: when the
//! agent cannot be reached or does not answer in time, ADD fails with a
//! CNI error (code 11, "try again later") and the runtime retries, so a
//! mesh pod never starts uncaptured. A pod that would not be enrolled does
//! not need the agent: with a kubeconfig (`kubernetes.kubeconfig`, as
//! upstream's conflist) the plugin reads the Pod and its Namespace and
//! passes such a pod while the agent is down ([`crate::agent::enrolment`]
//! decides). Namespaces in `exclude_namespaces` (default `kube-system`)
//! never wait for the agent, so the node can start the agent itself.
//!
//! Configuration (the plugin's entry in the conflist):
//! `{"type": "mesh-cni", "agent_socket": "/var/run/mesh/cni.sock",
//!   "timeout_seconds": 30, "exclude_namespaces": ["kube-system"],
//!   "kubernetes": {"kubeconfig": "/etc/cni/net.d/mesh-cni-kubeconfig"}}`.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::report::{DEFAULT_AGENT_SOCKET, MAX_LINE, PluginReply, PluginRequest, SandboxReport};

/// The CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// CNI error codes (spec, "Error").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniEnv {
    pub command: String,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS`, split into `key=value` pairs.
    pub args: HashMap<String, String>,
}

impl CniEnv {
    /// Reads the variables through `var` (`std::env::var` in the binary).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let args = var("CNI_ARGS")
            .unwrap_or_default()
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Self {
            command: var("CNI_COMMAND").unwrap_or_default(),
            container_id: var("CNI_CONTAINERID").unwrap_or_default(),
            netns: var("CNI_NETNS").filter(|s| !s.is_empty()).map(PathBuf::from),
            ifname: var("CNI_IFNAME").unwrap_or_default(),
            args,
        }
    }
}

/// What the binary prints and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

impl Outcome {
    fn ok(stdout: String) -> Self {
        Self { stdout, success: true }
    }

    fn error(version: &str, code: u32, msg: &str, details: &str) -> Self {
        let body = json!({ "cniVersion": version, "code": code, "msg": msg, "details": details });
        Self { stdout: body.to_string(), success: false }
    }
}

#[derive(Debug, Deserialize)]
struct NetConf {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
    #[serde(default = "default_socket")]
    agent_socket: PathBuf,
    #[serde(default = "default_timeout")]
    timeout_seconds: u64,
    #[serde(default = "default_excluded")]
    exclude_namespaces: Vec<String>,
    /// upstream's `kubernetes` section: a kubeconfig lets the plugin decide
    /// by itself whether a pod needs the agent when the agent is down.
    #[serde(default)]
    kubernetes: KubernetesConf,
}

#[derive(Debug, Default, Deserialize)]
struct KubernetesConf {
    kubeconfig: Option<PathBuf>,
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_AGENT_SOCKET)
}

fn default_timeout() -> u64 {
    30
}

fn default_excluded() -> Vec<String> {
    vec!["kube-system".to_owned()]
}

/// Runs one plugin invocation.
pub fn run(env: &CniEnv, stdin: &str) -> Outcome {
    if env.command == "VERSION" {
        let body = json!({ "cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS });
        return Outcome::ok(body.to_string());
    }
    let conf: NetConf = match serde_json::from_str(stdin) {
        Ok(conf) => conf,
        Err(e) => {
            return Outcome::error(
                "1.0.0",
                code::DECODE_FAILURE,
                "bad network config",
                &e.to_string(),
            );
        }
    };
    let version = conf.cni_version.clone();
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        let details = format!("{version:?} is not one of {SUPPORTED_VERSIONS:?}");
        return Outcome::error(
            "1.0.0",
            code::INCOMPATIBLE_VERSION,
            "unsupported cniVersion",
            &details,
        );
    }
    match env.command.as_str() {
        "ADD" => add(env, &conf),
        "DEL" => {
            if let Some(report) = sandbox(env, None) {
                let timeout = Duration::from_secs(5);
                if let Err(e) = ask(&conf.agent_socket, &PluginRequest::Del(report), timeout) {
                    // DEL always succeeds; the agent also notices through
                    // its pod watch.
                    tracing::debug!(error = %e, "telling the agent about DEL");
                }
            }
            Outcome::ok(String::new())
        }
        "CHECK" if conf.prev_result.is_none() => Outcome::error(
            &version,
            code::INVALID_CONFIG,
            "CHECK without prevResult",
            "mesh-cni is a chained plugin",
        ),
        "CHECK" => Outcome::ok(String::new()),
        other => Outcome::error(&version, code::INVALID_ENV, "unknown CNI_COMMAND", other),
    }
}

fn add(env: &CniEnv, conf: &NetConf) -> Outcome {
    let version = conf.cni_version.as_str();
    let Some(prev) = conf.prev_result.as_ref() else {
        return Outcome::error(
            version,
            code::INVALID_CONFIG,
            "no prevResult",
            "mesh-cni must be chained after the plugin that assigns pod IPs",
        );
    };
    let unchanged = Outcome::ok(prev.to_string());
    let Some(report) = sandbox(env, Some(prev)) else {
        // Not a Kubernetes pod: nothing to capture.
        return unchanged;
    };
    if conf.exclude_namespaces.contains(&report.namespace) {
        return unchanged;
    }
    let pod = format!("{}/{}", report.namespace, report.name);
    let timeout = Duration::from_secs(conf.timeout_seconds.max(1));
    match ask(&conf.agent_socket, &PluginRequest::Add(report.clone()), timeout) {
        Ok(PluginReply::Enrolled | PluginReply::NotMesh | PluginReply::Done) => unchanged,
        Ok(PluginReply::Failed { message }) => Outcome::error(
            version,
            code::TRY_AGAIN_LATER,
            &format!("pod {pod} not enrolled yet"),
            &message,
        ),
        Err(e) => match without_agent(conf, &report, timeout) {
            // Not a mesh pod: it needs no agent (upstream: only pods that
            // would be enrolled fail while the agent is down).
            Ok(false) => {
                tracing::info!(%pod, error = %e, "agent unreachable; not a mesh pod, passed");
                unchanged
            }
            Ok(true) => Outcome::error(
                version,
                code::TRY_AGAIN_LATER,
                &format!("mesh node agent unreachable for pod {pod}"),
                &format!("{e}; the pod is enrolled in the mesh and must wait for the agent"),
            ),
            Err(why) => Outcome::error(
                version,
                code::TRY_AGAIN_LATER,
                &format!("mesh node agent unreachable for pod {pod}"),
                &format!("{e}; {why}"),
            ),
        },
    }
}

/// Whether the pod would be enrolled, decided without the agent; an error
/// when it cannot be told (then the pod fails closed).
fn without_agent(
    conf: &NetConf,
    report: &SandboxReport,
    timeout: Duration,
) -> Result<bool, String> {
    let Some(kubeconfig) = conf.kubernetes.kubeconfig.as_deref() else {
        return Err("no kubeconfig to check the pod's enrolment with".to_owned());
    };
    would_enrol(kubeconfig, report, timeout)
}

#[cfg(feature = "kube")]
fn would_enrol(
    kubeconfig: &Path,
    report: &SandboxReport,
    timeout: Duration,
) -> Result<bool, String> {
    crate::plugin_kube::would_enrol(kubeconfig, report, timeout)
}

#[cfg(not(feature = "kube"))]
fn would_enrol(kubeconfig: &Path, _: &SandboxReport, _: Duration) -> Result<bool, String> {
    Err(format!("built without Kubernetes support; cannot use {}", kubeconfig.display()))
}

/// The sandbox from `CNI_ARGS`, `CNI_NETNS` and the IPs of `prev`; `None`
/// when it is not a Kubernetes pod.
fn sandbox(env: &CniEnv, prev: Option<&Value>) -> Option<SandboxReport> {
    let namespace = env.args.get("K8S_POD_NAMESPACE")?.clone();
    let name = env.args.get("K8S_POD_NAME")?.clone();
    let container_id = env
        .args
        .get("K8S_POD_INFRA_CONTAINER_ID")
        .cloned()
        .unwrap_or_else(|| env.container_id.clone());
    let ips = prev
        .and_then(|p| p.get("ips"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address")?.as_str())
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .collect();
    Some(SandboxReport {
        namespace,
        name,
        uid: env.args.get("K8S_POD_UID").cloned(),
        container_id,
        netns: env.netns.clone(),
        ips,
    })
}

/// Sends one request to the agent and waits up to `timeout` for the reply.
fn ask(socket: &Path, request: &PluginRequest, timeout: Duration) -> Result<PluginReply, String> {
    let at = socket.display();
    let mut conn = UnixStream::connect(socket).map_err(|e| format!("connecting to {at}: {e}"))?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|()| conn.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{at}: {e}"))?;
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    conn.write_all(line.as_bytes()).map_err(|e| format!("writing to {at}: {e}"))?;
    let mut reply = String::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
    BufReader::new(conn.take(limit))
        .read_line(&mut reply)
        .map_err(|e| format!("waiting for the agent on {at}: {e}"))?;
    serde_json::from_str(reply.trim_end()).map_err(|e| format!("bad reply from {at}: {e}"))
}

#[cfg(test)]
#[path = "plugin_tests.rs"]
mod tests;
