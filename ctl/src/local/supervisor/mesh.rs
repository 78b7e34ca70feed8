//! The running mesh: start-up ([`Mesh::bring_up`]) and the supervision
//! loop ([`Mesh::run`]).

use std::collections::{BTreeMap, BTreeSet};
use std::mem::ManuallyDrop;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use mesh_netns::{NodeSpec, PodSpec, Topology};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::cli::UpArgs;
use crate::local::enroll::{DirectEnroller, Enroller, PodEnrolment};
use crate::local::error::Error;
use crate::local::generate::{self, Additions, ServiceIps};
use crate::local::layout::{self, DNS_IP, ISTIOD_HOST, ISTIOD_IP, Layout};
use crate::local::manifest::{self, EnvValue, Manifests, PodDef, RestartPolicy};
use crate::local::process::{Launch, Supervised};
use crate::local::record::{
    self, ContainerStatus, IstiodStatus, NodeStatus, Phase, PodStatus, Record, ServiceStatus,
    Status,
};
use crate::local::{http, preflight};
use crate::output;

pub(crate) const ISTIOD_MONITORING_PORT: u16 = 15014;
const ISTIOD_GRPC_PORT: u16 = 15012;
const ZTUNNEL_READY_PORT: u16 = 15021;
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long processes get after SIGTERM at `down` (ztunnel drains its
/// connections meanwhile).
const STOP_GRACE: Duration = Duration::from_secs(3);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One line of the supervisor's log (its stderr is `STATE/logs/supervisor.log`).
fn log(line: impl std::fmt::Display) {
    output::error(format_args!("{} {line}", utc_now()));
}

fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    utc(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn istiod_addr(port: u16) -> SocketAddr {
    SocketAddr::from((ISTIOD_IP.parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::LOCALHOST), port))
}

/// One pod's container process.
#[derive(Debug)]
struct Container {
    pod: String,
    process: Supervised,
}

#[derive(Debug)]
pub(crate) struct Mesh {
    layout: Layout,
    config_dir: PathBuf,
    prefix: String,
    /// Never dropped here: `down` removes the namespaces (after killing
    /// every process in them), also when this process was killed.
    topology: ManuallyDrop<Topology>,
    manifests: Manifests,
    service_ips: ServiceIps,
    istiod: Supervised,
    ztunnels: BTreeMap<String, Supervised>,
    /// Ztunnel restart counts the pods were enrolled under.
    enrolled_under: BTreeMap<String, u32>,
    containers: Vec<Container>,
    enroller: DirectEnroller,
    enrolled: BTreeSet<String>,
    status: Status,
    istiod_errors: Vec<String>,
    source_errors: Vec<String>,
}

/// Waits until `GET path` answers 200 in `netns`, failing early if the
/// process exits.
async fn wait_ready(
    process: &mut Supervised,
    netns: &str,
    addr: SocketAddr,
    path: &str,
) -> Result<(), Error> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = process.exited() {
            return Err(Error::Exited {
                what: process.launch.what.clone(),
                status,
                detail: log_tail(&process.launch.log),
            });
        }
        let last = match http::get(netns, addr, path) {
            Ok((200, _)) => return Ok(()),
            Ok((code, body)) => format!("{code} {}", body.trim()),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(Error::NotReady {
                what: process.launch.what.clone(),
                seconds: START_TIMEOUT.as_secs(),
                detail: format!(" (last answer: {last}){}", log_tail(&process.launch.log)),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last lines of a log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines.get(lines.len().saturating_sub(8)..).unwrap_or_default();
    format!("; log {}:\n{}", path.display(), tail.join("\n"))
}

/// The problems istiod reports about the files it read, with paths of
/// the generated copy turned back into the user's.
fn istiod_file_errors(
    layout: &Layout,
    fabric: &str,
    config_dir: &Path,
) -> Result<Vec<String>, String> {
    let (code, body) =
        http::get(fabric, istiod_addr(ISTIOD_MONITORING_PORT), "/debug/config_errors")?;
    if code != 200 {
        return Err(format!("/debug/config_errors answered {code}"));
    }
    let value: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let generated = layout.config().display().to_string();
    let user = config_dir.display().to_string();
    Ok(value
        .get("files")
        .and_then(serde_json::Value::as_array)
        .map(|files| {
            files
                .iter()
                .filter_map(serde_json::Value::as_str)
                .map(|e| e.replace(&generated, &user))
                .collect()
        })
        .unwrap_or_default())
}

impl Mesh {
    pub(crate) async fn bring_up(
        args: &UpArgs,
        layout: &Layout,
        record: &mut Record,
        status: Status,
    ) -> Result<Self, Error> {
        let config_dir = std::path::absolute(&args.config).unwrap_or_else(|_| args.config.clone());
        let manifests = manifest::load(&config_dir).map_err(Error::Config)?;
        let prefix = args.prefix.clone();
        let bin_dir = super::super::up::bin_dir(args)?;

        // Record what goes outside the state directory before creating it.
        for pod in &manifests.pods {
            record.outside_files.push(layout::etc_netns(&pod_netns(&prefix, pod)));
        }
        record::save(&layout.record(), record)?;

        let nodes: Vec<NodeSpec> =
            manifests.nodes().into_iter().map(|name| NodeSpec { name }).collect();
        let pods: Vec<PodSpec> = manifests
            .pods
            .iter()
            .map(|p| PodSpec {
                node: p.node.clone(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            })
            .collect();
        log(format_args!(
            "building {} node(s) and {} pod(s) under prefix {prefix}",
            nodes.len(),
            pods.len()
        ));
        let topology = ManuallyDrop::new(Topology::build(&prefix, &nodes, &pods)?);
        let fabric = layout::fabric_netns(&prefix);
        ip(&["-n", &fabric, "addr", "add", &format!("{ISTIOD_IP}/24"), "dev", "br0"])?;
        for pod in topology.pods() {
            let dir = layout::etc_netns(&pod.netns_name);
            std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
            let resolv = format!(
                "search {ns}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {DNS_IP}\noptions ndots:5\n",
                ns = pod.namespace
            );
            let path = dir.join("resolv.conf");
            std::fs::write(&path, resolv).map_err(Error::io("writing", &path))?;
        }

        let mut mesh_status = status;
        mesh_status.istiod = IstiodStatus {
            netns: fabric.clone(),
            xds: istiod_addr(ISTIOD_GRPC_PORT).to_string(),
            monitoring: istiod_addr(ISTIOD_MONITORING_PORT).to_string(),
            pid: None,
            ready: false,
            log: layout.component_log("istiod"),
        };
        let mut service_ips = ServiceIps::default();
        service_ips.assign(&manifests);
        let pod_ips: BTreeMap<String, Ipv4Addr> =
            topology.pods().iter().map(|p| (format!("{}/{}", p.namespace, p.name), p.ip)).collect();
        let files = generate::render(
            &manifests,
            &Additions { pod_ips: &pod_ips, service_ips: &service_ips, unready: &BTreeSet::new() },
        )?;
        generate::write(&layout.config(), &files)?;

        let node_names: Vec<String> = topology.nodes().iter().map(|n| n.name.clone()).collect();
        let istiod_state = layout.istiod_state();
        let mut istiod = Supervised::start(
            Launch {
                what: "istiod".into(),
                netns: fabric.clone(),
                argv: vec![bin_dir.join("istiod").display().to_string()],
                env: vec![
                    ("PATH".into(), PATH.into()),
                    ("LOCAL_CONFIG_DIR".into(), layout.config().display().to_string()),
                    ("LOCAL_STATE_DIR".into(), istiod_state.display().to_string()),
                    ("LOCAL_NODES".into(), node_names.join(",")),
                    ("GRPC_ADDRESS".into(), istiod_addr(ISTIOD_GRPC_PORT).to_string()),
                    ("PLAINTEXT_XDS_ADDRESS".into(), "127.0.0.1:15010".into()),
                    ("MONITORING_ADDRESS".into(), istiod_addr(ISTIOD_MONITORING_PORT).to_string()),
                    ("LOG_LEVEL".into(), "info".into()),
                ],
                working_dir: None,
                log: layout.component_log("istiod"),
            },
            RestartPolicy::Always,
        )?;
        log("waiting for istiod");
        wait_ready(&mut istiod, &fabric, istiod_addr(ISTIOD_MONITORING_PORT), "/ready").await?;
        let file_errors = istiod_file_errors(layout, &fabric, &config_dir).map_err(|message| {
            Error::Command { command: "GET /debug/config_errors".into(), message }
        })?;
        if !file_errors.is_empty() {
            return Err(Error::Rejected(file_errors));
        }

        let mut ztunnels = BTreeMap::new();
        let mut sockets = BTreeMap::new();
        for node in topology.nodes() {
            let socket = layout.zds_socket(&node.name);
            if let Some(dir) = socket.parent() {
                std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
            }
            sockets.insert(node.name.clone(), socket.clone());
            let launch = Launch {
                what: format!("ztunnel {}", node.name),
                netns: node.netns_name.clone(),
                argv: vec![bin_dir.join("ztunnel").display().to_string()],
                env: vec![
                    ("PATH".into(), PATH.into()),
                    ("CA_ADDRESS".into(), format!("{ISTIOD_HOST}:{ISTIOD_GRPC_PORT}")),
                    ("XDS_ADDRESS".into(), format!("{ISTIOD_HOST}:{ISTIOD_GRPC_PORT}")),
                    ("ISTIOD_DIAL_ADDRESS".into(), istiod_addr(ISTIOD_GRPC_PORT).to_string()),
                    ("NODE_NAME".into(), node.name.clone()),
                    ("POD_NAME".into(), format!("ztunnel-{}", node.name)),
                    ("INSTANCE_IP".into(), node.ip.to_string()),
                    ("ROOT_CERT_PATH".into(), layout.root_cert().display().to_string()),
                    ("TOKEN_PATH".into(), layout.node_token(&node.name).display().to_string()),
                    ("ZDS_SOCKET_PATH".into(), socket.display().to_string()),
                    ("DNS_PROXY".into(), "true".into()),
                    ("RUST_LOG".into(), "info".into()),
                ],
                working_dir: None,
                log: layout.component_log(&format!("ztunnel-{}", node.name)),
            };
            ztunnels.insert(node.name.clone(), Supervised::start(launch, RestartPolicy::Always)?);
        }
        for node in topology.nodes() {
            if let Some(ztunnel) = ztunnels.get_mut(&node.name) {
                log(format_args!("waiting for ztunnel on {}", node.name));
                let ready = SocketAddr::from((Ipv4Addr::LOCALHOST, ZTUNNEL_READY_PORT));
                wait_ready(ztunnel, &node.netns_name, ready, "/healthz/ready").await?;
            }
        }

        let mut mesh = Self {
            layout: layout.clone(),
            config_dir,
            prefix,
            topology,
            manifests,
            service_ips,
            istiod,
            ztunnels,
            enrolled_under: BTreeMap::new(),
            containers: Vec::new(),
            enroller: DirectEnroller::new(preflight::backend(), sockets),
            enrolled: BTreeSet::new(),
            status: mesh_status,
            istiod_errors: Vec::new(),
            source_errors: Vec::new(),
        };
        // Enrol before the apps start, so their first packets are captured.
        mesh.enroll_missing(true).await?;
        // A ztunnel is ready again once it holds its new pods' certificates.
        for node in mesh.topology.nodes() {
            if let Some(ztunnel) = mesh.ztunnels.get_mut(&node.name) {
                let ready = SocketAddr::from((Ipv4Addr::LOCALHOST, ZTUNNEL_READY_PORT));
                wait_ready(ztunnel, &node.netns_name, ready, "/healthz/ready").await?;
            }
        }
        mesh.start_containers()?;
        mesh.refresh_status(true);
        mesh.status.phase = Phase::Ready;
        record::save(&mesh.layout.status(), &mesh.status)?;
        Ok(mesh)
    }

    /// Enrols every ambient pod not (or no longer) enrolled whose node's
    /// ztunnel runs. At start-up (`strict`) a failure is fatal.
    async fn enroll_missing(&mut self, strict: bool) -> Result<(), Error> {
        let mut wanted = Vec::new();
        for pod in self.topology.pods() {
            let key = format!("{}/{}", pod.namespace, pod.name);
            let restarts = self.ztunnels.get(&pod.node).map(|z| z.restarts).unwrap_or_default();
            if self.enrolled_under.get(&key).is_some_and(|r| *r != restarts) {
                // Its ztunnel restarted and lost its pods.
                self.enrolled.remove(&key);
                self.enrolled_under.remove(&key);
                self.enroller.node_restarted(&pod.node);
            }
            let Some(def) = self.manifests.pod(&pod.namespace, &pod.name) else { continue };
            if self.enrolled.contains(&key) || !self.manifests.ambient(def) {
                continue;
            }
            if !self.ztunnels.get(&pod.node).is_some_and(Supervised::running) {
                continue;
            }
            wanted.push((
                key,
                restarts,
                PodEnrolment {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    service_account: def.service_account.clone(),
                    node: pod.node.clone(),
                    netns: pod.netns_name.clone(),
                    annotations: def.annotations.clone(),
                },
            ));
        }
        for (key, restarts, pod) in wanted {
            match self.enroller.enroll(&pod).await {
                Ok(()) => {
                    log(format_args!("enrolled pod {key} on {}", pod.node));
                    self.enrolled.insert(key.clone());
                    self.enrolled_under.insert(key, restarts);
                }
                Err(e) if strict => return Err(e),
                Err(e) => log(e),
            }
        }
        Ok(())
    }

    fn start_containers(&mut self) -> Result<(), Error> {
        let pods: Vec<PodDef> = self.manifests.pods.clone();
        for pod in &pods {
            let Some(handle) = self.topology.pod(&pod.namespace, &pod.name).cloned() else {
                continue;
            };
            for c in &pod.containers {
                let mut env = vec![
                    ("PATH".to_owned(), PATH.to_owned()),
                    ("HOME".to_owned(), "/root".to_owned()),
                    ("HOSTNAME".to_owned(), pod.name.clone()),
                ];
                for (name, value) in &c.env {
                    let value = match value {
                        EnvValue::Literal(v) => v.clone(),
                        EnvValue::Field(field) => match field.as_str() {
                            "metadata.name" => pod.name.clone(),
                            "metadata.namespace" => pod.namespace.clone(),
                            "spec.nodeName" => pod.node.clone(),
                            "spec.serviceAccountName" => pod.service_account.clone(),
                            _ => handle.ip.to_string(),
                        },
                    };
                    env.push((name.clone(), value));
                }
                let launch = Launch {
                    what: format!("container {}/{}/{}", pod.namespace, pod.name, c.name),
                    netns: handle.netns_name.clone(),
                    argv: c.argv.clone(),
                    env,
                    working_dir: c.working_dir.as_ref().map(PathBuf::from),
                    log: self.layout.container_log(&pod.namespace, &pod.name, &c.name),
                };
                let process = Supervised::start(launch, pod.restart)?;
                self.containers.push(Container { pod: pod.key(), process });
            }
        }
        Ok(())
    }

    /// Supervises until killed (`down` sends SIGKILL).
    /// Supervises until SIGTERM (`down`), then stops every process it
    /// started (containers first, istiod last) and exits; `down` removes
    /// the rest.
    pub(crate) async fn run(&mut self) -> Result<ExitCode, Error> {
        let mut tick: u64 = 0;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|source| Error::Spawn { what: "the SIGTERM handler".into(), source })?;
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = terminate.recv() => {
                    log("SIGTERM: stopping the mesh's processes");
                    self.stop_all();
                    return Ok(ExitCode::SUCCESS);
                }
            }
            tick = tick.wrapping_add(1);
            let mut events = Vec::new();
            events.extend(self.istiod.tick());
            events.extend(self.ztunnels.values_mut().filter_map(Supervised::tick));
            events.extend(self.containers.iter_mut().filter_map(|c| c.process.tick()));
            for event in events {
                log(event);
            }
            if tick.is_multiple_of(2) {
                self.resync();
                if let Err(e) = self.enroll_missing(false).await {
                    log(e);
                }
            }
            self.refresh_status(tick.is_multiple_of(4));
            if let Err(e) = record::save(&self.layout.status(), &self.status) {
                log(e);
            }
        }
    }

    /// SIGTERM to every process, SIGKILL to what is left after the grace
    /// period; all reaped.
    fn stop_all(&mut self) {
        let mut all: Vec<&mut Supervised> =
            self.containers.iter_mut().map(|c| &mut c.process).collect();
        all.extend(self.ztunnels.values_mut());
        all.push(&mut self.istiod);
        for process in &mut all {
            process.signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline
            && all.iter_mut().any(|p| {
                p.exited();
                p.running()
            })
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for process in &mut all {
            process.signal(Signal::SIGKILL);
            process.reap();
        }
    }

    /// Re-reads the user's directory; on errors keeps the last good copy.
    fn resync(&mut self) {
        let manifests = match manifest::load(&self.config_dir) {
            Ok(m) => m,
            Err(errors) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                if errors != self.source_errors {
                    log(format_args!(
                        "the configuration has errors; keeping the last good one:\n  - {}",
                        errors.join("\n  - ")
                    ));
                    self.source_errors = errors;
                }
                return;
            }
        };
        let mut notes = Vec::new();
        for pod in &manifests.pods {
            if self.topology.pod(&pod.namespace, &pod.name).is_none() {
                notes.push(format!(
                    "Pod {}: added while running; pods start with the next `ambientctl local up` (run `down` first)",
                    pod.key()
                ));
            } else if self
                .manifests
                .pod(&pod.namespace, &pod.name)
                .is_some_and(|old| old.containers != pod.containers || old.node != pod.node)
            {
                notes.push(format!(
                    "Pod {}: containers or node changed while running; applied at the next `up`",
                    pod.key()
                ));
            }
        }
        self.service_ips.assign(&manifests);
        let pod_ips: BTreeMap<String, Ipv4Addr> = self
            .topology
            .pods()
            .iter()
            .map(|p| (format!("{}/{}", p.namespace, p.name), p.ip))
            .collect();
        let unready: BTreeSet<String> = self
            .containers
            .iter()
            .filter(|c| !c.process.running())
            .map(|c| c.pod.clone())
            .collect();
        let additions =
            Additions { pod_ips: &pod_ips, service_ips: &self.service_ips, unready: &unready };
        match generate::render(&manifests, &additions)
            .and_then(|f| generate::write(&self.layout.config(), &f))
        {
            Ok(true) => log("configuration changed; istiod's copy updated"),
            Ok(false) => {}
            Err(e) => notes.push(e.to_string()),
        }
        // Keep the started pods' definitions; take labels and annotations.
        let mut next = manifests;
        for pod in &mut next.pods {
            if let Some(old) = self.manifests.pod(&pod.namespace, &pod.name) {
                pod.containers = old.containers.clone();
            }
        }
        self.manifests = next;
        if notes != self.source_errors {
            for note in &notes {
                log(note);
            }
        }
        self.source_errors = notes;
    }

    fn refresh_status(&mut self, probe: bool) {
        let s = &mut self.status;
        s.istiod.pid = self.istiod.pid().and_then(|p| i32::try_from(p).ok());
        if probe {
            let fabric = layout::fabric_netns(&self.prefix);
            s.istiod.ready = matches!(
                http::get(&fabric, istiod_addr(ISTIOD_MONITORING_PORT), "/ready"),
                Ok((200, _))
            );
            if let Ok(errors) = istiod_file_errors(&self.layout, &fabric, &self.config_dir) {
                self.istiod_errors = errors;
            }
        }
        let mut nodes = Vec::new();
        for node in self.topology.nodes() {
            let ztunnel = self.ztunnels.get(&node.name);
            let previous = s.nodes.iter().find(|n| n.name == node.name).map(|n| n.ready);
            let ready = if probe {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ZTUNNEL_READY_PORT));
                matches!(http::get(&node.netns_name, addr, "/healthz/ready"), Ok((200, _)))
            } else {
                previous.unwrap_or(true)
            };
            nodes.push(NodeStatus {
                name: node.name.clone(),
                netns: node.netns_name.clone(),
                ip: node.ip.to_string(),
                ztunnel_pid: ztunnel.and_then(Supervised::pid).and_then(|p| i32::try_from(p).ok()),
                ready: ready && ztunnel.is_some_and(Supervised::running),
                metrics: format!("http://{}:15020/metrics (in netns {})", node.ip, node.netns_name),
                log: self.layout.component_log(&format!("ztunnel-{}", node.name)),
            });
        }
        s.nodes = nodes;
        s.pods = self
            .topology
            .pods()
            .iter()
            .map(|p| {
                let key = format!("{}/{}", p.namespace, p.name);
                let def = self.manifests.pod(&p.namespace, &p.name);
                PodStatus {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    node: p.node.clone(),
                    ip: p.ip.to_string(),
                    netns: p.netns_name.clone(),
                    service_account: def.map(|d| d.service_account.clone()).unwrap_or_default(),
                    enrolled: self.enrolled.contains(&key),
                    ready: self
                        .containers
                        .iter()
                        .filter(|c| c.pod == key)
                        .all(|c| c.process.running()),
                    containers: self
                        .containers
                        .iter()
                        .filter(|c| c.pod == key)
                        .map(|c| ContainerStatus {
                            name: c
                                .process
                                .launch
                                .what
                                .rsplit('/')
                                .next()
                                .unwrap_or_default()
                                .to_owned(),
                            pid: c.process.pid().and_then(|p| i32::try_from(p).ok()),
                            running: c.process.running(),
                            restarts: c.process.restarts,
                            last_exit: c.process.last_exit.clone(),
                            log: c.process.launch.log.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        s.services = self
            .manifests
            .services
            .iter()
            .map(|svc| ServiceStatus {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                cluster_ip: svc
                    .cluster_ip
                    .clone()
                    .or_else(|| {
                        self.service_ips.get(&svc.namespace, &svc.name).map(|ip| ip.to_string())
                    })
                    .unwrap_or_default(),
            })
            .collect();
        s.config_errors = self.source_errors.iter().chain(&self.istiod_errors).cloned().collect();
    }
}

/// The pod namespace name `Topology` gives.
fn pod_netns(prefix: &str, pod: &PodDef) -> String {
    format!("{prefix}-pod-{}-{}", pod.namespace, pod.name)
}

fn ip(args: &[&str]) -> Result<(), Error> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| Error::Spawn { what: "ip".into(), source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("ip {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_795_796_431), "2026-11-27T16:20:31Z");
    }
}
