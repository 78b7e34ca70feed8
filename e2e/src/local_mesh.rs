//! A mesh run by `ambientctl local up` from a directory of YAML written by
//! the test, with helpers to act as its pods and read its components
//! (status, istiod's debug pages, ztunnel metrics, pod logs, fd counts).
//!
//! Every helper panics with what it was doing: these are test fixtures
//! whose failure is the report. Every wait is bounded ([`wait_for`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;

use crate::binaries;

/// istiod's address on the fabric bridge and its monitoring port.
pub const ISTIOD_MONITORING: &str = "172.31.0.1:15014";
/// ztunnel's Prometheus endpoint, inside a node's namespace.
pub const ZTUNNEL_METRICS: &str = "127.0.0.1:15020";

/// The process output as text, both streams.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// Polls `probe` every 250 ms until it returns `Ok`, for at most
/// `timeout`; the error says what was awaited and the last observation.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => {
                return Err(format!(
                    "timed out after {} s waiting for {what}; last: {last}",
                    timeout.as_secs()
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// [`poll`], panicking when time runs out.
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Result<T, String>) -> T {
    poll(what, timeout, probe).unwrap_or_else(|e| panic!("{e}"))
}

/// The number of open file descriptors of `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/fd: {e}"))
        .count()
}

/// The sum of every sample of `name` (Prometheus text format) whose labels
/// contain each of `labels` (e.g. `source_principal="..."`).
pub fn metric_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One `ambientctl local` mesh; `down` on drop.
#[derive(Debug)]
pub struct LocalMesh {
    dir: tempfile::TempDir,
    ambientctl: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
    pub prefix: String,
}

impl LocalMesh {
    /// A config directory holding `files` (name, YAML); nothing runs yet.
    /// Fails (never skips) without root or without the binaries.
    pub fn new(tag: &str, files: &[(&str, &str)]) -> Self {
        if let Err(e) = mesh_netns::require_root() {
            panic!("the attacks suite needs root (network namespaces): {e}");
        }
        let ambientctl = binaries::ambientctl().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
        let config = dir.path().join("config");
        std::fs::create_dir(&config).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        let state = dir.path().join("state");
        let prefix = format!("{tag}{}", std::process::id() % 10_000);
        // A crashed earlier run with the same pid must not block this one.
        if let Err(e) = mesh_netns::Topology::remove_leftovers(&prefix) {
            panic!("removing leftover namespaces of {prefix}: {e}");
        }
        let mesh = Self { dir, ambientctl, config, state, prefix };
        for (name, yaml) in files {
            mesh.write(name, yaml);
        }
        mesh
    }

    /// The temporary directory holding config and state.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ambientctl local <args[0]> --state STATE <args[1..]>`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.ambientctl);
        cmd.arg("local").args(args.get(..1).unwrap_or_default()).arg("--state").arg(&self.state);
        cmd.args(args.get(1..).unwrap_or_default());
        cmd.output().unwrap_or_else(|e| panic!("running {}: {e}", self.ambientctl.display()))
    }

    /// `up`, which returns once istiod, the ztunnels and the pods are ready.
    pub fn up(&self) {
        let config = self.config.to_string_lossy().into_owned();
        let out = self.ctl(&["up", "--config", &config, "--prefix", &self.prefix]);
        assert!(out.status.success(), "ambientctl local up failed: {}", text(&out));
    }

    pub fn status(&self) -> Value {
        let out = self.ctl(&["status", "-o", "json"]);
        assert!(out.status.success(), "ambientctl local status: {}", text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status is not JSON ({e}): {}", text(&out)))
    }

    /// Writes (or replaces) a file of the config directory; the running
    /// mesh picks it up within about two seconds.
    pub fn write(&self, file: &str, content: &str) {
        let path = self.config.join(file);
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    pub fn remove(&self, file: &str) {
        let path = self.config.join(file);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// The status entry of pod `namespace/name`, if the supervisor knows it.
    pub fn pod_status(&self, namespace: &str, name: &str) -> Option<Value> {
        let status = self.status();
        status["pods"]
            .as_array()?
            .iter()
            .find(|p| p["namespace"] == namespace && p["name"] == name)
            .cloned()
    }

    pub fn pod_ip(&self, namespace: &str, name: &str) -> String {
        let pod = self.pod_status(namespace, name);
        pod.as_ref()
            .and_then(|p| p["ip"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no IP for pod {namespace}/{name} in status: {pod:?}"))
    }

    fn node(&self, node: &str) -> Value {
        let status = self.status();
        status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["name"] == node).cloned())
            .unwrap_or_else(|| panic!("no node {node} in status: {status:#}"))
    }

    /// The network namespace of `node` (where its ztunnel runs).
    pub fn node_netns(&self, node: &str) -> String {
        let entry = self.node(node);
        entry["netns"].as_str().map(str::to_owned).unwrap_or_else(|| panic!("{entry:#}"))
    }

    /// The pid of `node`'s ztunnel (the supervisor's child), while it runs.
    pub fn ztunnel_pid(&self, node: &str) -> Option<i32> {
        self.node(node)["ztunnel_pid"].as_i64().and_then(|p| i32::try_from(p).ok())
    }

    pub fn fabric_netns(&self) -> String {
        format!("{}-fabric", self.prefix)
    }

    /// `ambientctl local exec POD -n NS -- ARGS...`.
    pub fn exec(&self, namespace: &str, pod: &str, args: &[&str]) -> Output {
        let mut all = vec!["exec", pod, "-n", namespace, "--"];
        all.extend_from_slice(args);
        self.ctl(&all)
    }

    /// `GET url` from pod `namespace/pod` with `headers` (`Name: value`),
    /// through its capture; the body, or what went wrong.
    pub fn http_get(
        &self,
        namespace: &str,
        pod: &str,
        url: &str,
        headers: &[&str],
    ) -> Result<String, String> {
        let mut args = vec!["python3", "-c", HTTP_GET, url];
        args.extend_from_slice(headers);
        let out = self.exec(namespace, pod, &args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(text(&out))
        }
    }

    /// `GET http://addr/path` run inside network namespace `netns`.
    pub fn netns_get(&self, netns: &str, addr: &str, path: &str) -> Result<String, String> {
        let url = format!("http://{addr}{path}");
        let out = Command::new("ip")
            .args(["netns", "exec", netns, "python3", "-c", HTTP_GET, &url])
            .output()
            .map_err(|e| format!("ip netns exec {netns}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(text(&out))
        }
    }

    /// `node`'s ztunnel metrics (Prometheus text).
    pub fn ztunnel_metrics(&self, node: &str) -> String {
        self.try_ztunnel_metrics(node).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::ztunnel_metrics`], or why they could not be read.
    pub fn try_ztunnel_metrics(&self, node: &str) -> Result<String, String> {
        let netns = self.node_netns(node);
        self.netns_get(&netns, ZTUNNEL_METRICS, "/metrics")
            .map_err(|e| format!("ztunnel metrics of {node}: {e}"))
    }

    /// istiod's `/debug/config_errors` (`{"objects": [...], "files": [...]}`).
    pub fn istiod_config_errors(&self) -> Value {
        let body = self
            .netns_get(&self.fabric_netns(), ISTIOD_MONITORING, "/debug/config_errors")
            .unwrap_or_else(|e| panic!("istiod /debug/config_errors: {e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("config_errors ({e}): {body}"))
    }

    /// Everything pod `namespace/pod`'s containers wrote so far.
    pub fn pod_log(&self, namespace: &str, pod: &str) -> String {
        let out = self.ctl(&["logs", pod, "-n", namespace]);
        assert!(out.status.success(), "logs of {namespace}/{pod}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until pod `namespace/name` is enrolled with its containers
    /// running (a pod added while the mesh runs).
    pub fn pod_ready(&self, namespace: &str, name: &str, timeout: Duration) -> Result<(), String> {
        poll(&format!("pod {namespace}/{name} enrolled and running"), timeout, || {
            let pod = self.pod_status(namespace, name).ok_or_else(|| "not in status".to_owned())?;
            let running = pod["containers"]
                .as_array()
                .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c["running"] == true));
            if pod["enrolled"] == true && running { Ok(()) } else { Err(pod.to_string()) }
        })
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        // A failed test still cleans up.
        let _ = self.ctl(&["down"]);
    }
}

/// `python3 -c HTTP_GET URL [HEADER...]`: prints the body; on failure the
/// error goes to stderr and the exit code is 1. Bounded by a 5 s timeout.
const HTTP_GET: &str = "\
import sys, urllib.request
req = urllib.request.Request(sys.argv[1])
for h in sys.argv[2:]:
    k, v = h.split(':', 1)
    req.add_header(k.strip(), v.strip())
try:
    print(urllib.request.urlopen(req, timeout=5).read().decode())
except Exception as e:
    print(type(e).__name__, e, file=sys.stderr)
    sys.exit(1)
";
