//! The running mesh: start-up ([`Mesh::bring_up`]) and the supervision
//! loop ([`Mesh::run`]).

use std::collections::{BTreeMap, BTreeSet};
use std::mem::ManuallyDrop;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How long `up` waits for a pod's node agent to enrol it.
const ENROL_TIMEOUT: Duration = Duration::from_secs(30);

use mesh_netns::{NodeSpec, PodSpec, Topology};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::launch;
use super::probe::{
    ISTIOD_GRPC_PORT, ISTIOD_MONITORING_PORT, ZTUNNEL_READY_PORT, ip, istiod_addr,
    istiod_file_errors, log, wait_ready,
};
use crate::cli::UpArgs;
use crate::local::enroll::{Enroller, PodEnrolment};
use crate::local::error::Error;
use crate::local::generate::{self, Additions, ServiceIps};
use crate::local::layout::{self, ISTIOD_IP, Layout};
use crate::local::manifest::{self, Manifests, PodDef, RestartPolicy};
use crate::local::owned::{self, Kind};
use crate::local::preflight;
use crate::local::process::Supervised;
use crate::local::record::{self, IstiodStatus, Phase, Status};

/// How long processes get after SIGTERM at `down` (ztunnel drains its
/// connections meanwhile).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// One pod's container process.
#[derive(Debug)]
pub(super) struct Container {
    pub(super) pod: String,
    pub(super) process: Supervised,
}

#[derive(Debug)]
pub(crate) struct Mesh {
    pub(super) layout: Layout,
    pub(super) config_dir: PathBuf,
    pub(super) prefix: String,
    /// Never dropped here: `down` removes the namespaces (after killing
    /// every process in them), also when this process was killed.
    pub(super) topology: ManuallyDrop<Topology>,
    pub(super) manifests: Manifests,
    pub(super) service_ips: ServiceIps,
    pub(super) istiod: Supervised,
    pub(super) ztunnels: BTreeMap<String, Supervised>,
    pub(super) containers: Vec<Container>,
    pub(super) enroller: Enroller,
    pub(super) status: Status,
    pub(super) istiod_errors: Vec<String>,
    pub(super) source_errors: Vec<String>,
    /// Pods added while running, started after their enrolment.
    pub(super) pending: Vec<PodDef>,
    /// Pods removed while running (containers stopped).
    pub(super) retired: BTreeSet<String>,
}

impl Mesh {
    pub(crate) async fn bring_up(
        args: &UpArgs,
        layout: &Layout,
        status: Status,
    ) -> Result<Self, Error> {
        let config_dir = std::path::absolute(&args.config).unwrap_or_else(|_| args.config.clone());
        let manifests = manifest::load(&config_dir).map_err(Error::Config)?;
        let prefix = args.prefix.clone();
        let bin_dir = super::super::up::bin_dir(args)?;

        // Record what goes outside the state directory before creating it.
        record::update(&layout.record(), |record| {
            for pod in &manifests.pods {
                record.outside_files.push(layout::etc_netns(&pod_netns(&prefix, pod)));
            }
        })?;

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
            write_resolv_conf(&pod.netns_name, &pod.namespace)?;
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
        owned::claim(layout, &layout.config(), Kind::Tree)?;
        generate::write(&layout.config(), &files)?;
        // istiod fills its state directory (CA key and root, node tokens).
        owned::claim(layout, &layout.istiod_state(), Kind::Tree)?;

        let node_names: Vec<String> = topology.nodes().iter().map(|n| n.name.clone()).collect();
        let launch = launch::istiod(layout, &bin_dir, &fabric, &node_names);
        let mut istiod = Supervised::start(launch, RestartPolicy::Always)?;
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
                // ztunnel makes its ZDS socket there.
                owned::create_dir(layout, dir, Kind::Tree)?;
            }
            sockets.insert(node.name.clone(), socket.clone());
            let launch = launch::ztunnel(layout, &bin_dir, node, &socket);
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
            containers: Vec::new(),
            enroller: Enroller::start(preflight::backend(), sockets).await?,
            status: mesh_status,
            istiod_errors: Vec::new(),
            source_errors: Vec::new(),
            pending: Vec::new(),
            retired: BTreeSet::new(),
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

    /// Reports every pod and namespace to the node agents, which enrol
    /// and release pods as their labels say. At start-up (`strict`) every
    /// ambient pod must be enrolled before its containers start.
    async fn enroll_missing(&mut self, strict: bool) -> Result<(), Error> {
        let mut pods = Vec::new();
        for pod in self.topology.pods() {
            let Some(def) = self.manifests.pod(&pod.namespace, &pod.name) else { continue };
            pods.push(PodEnrolment {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                service_account: def.service_account.clone(),
                node: pod.node.clone(),
                netns: pod.netns_name.clone(),
                ip: pod.ip.into(),
                labels: def.labels.clone(),
                annotations: def.annotations.clone(),
                containers: def.containers.iter().map(|c| c.name.clone()).collect(),
            });
        }
        self.enroller.sync(&pods, &self.manifests.namespaces).await?;
        if strict {
            for pod in &pods {
                let ambient = self
                    .manifests
                    .pod(&pod.namespace, &pod.name)
                    .is_some_and(|def| self.manifests.ambient(def));
                if ambient {
                    self.enroller.wait_enrolled(pod, ENROL_TIMEOUT).await?;
                    log(format_args!("enrolled pod {} on {}", pod.key(), pod.node));
                }
            }
        }
        Ok(())
    }

    /// A pod that appeared while running: its namespace, address and
    /// resolv.conf now; enrolled and started by the next loop turn.
    fn add_pod(&mut self, pod: &PodDef) -> Result<(), Error> {
        if self.topology.node(&pod.node).is_none() {
            return Err(Error::State(format!(
                "node {} is new: nodes are created at `up` (run `down` and `up`)",
                pod.node
            )));
        }
        let key = pod.key();
        let outside = layout::etc_netns(&pod_netns(&self.prefix, pod));
        record::update(&self.layout.record(), |record| record.outside_files.push(outside))?;
        let spec = PodSpec {
            node: pod.node.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
        };
        self.topology.add_pod(&spec)?;
        write_resolv_conf(&pod_netns(&self.prefix, pod), &pod.namespace)?;
        log(format_args!("Pod {key}: added on {}", pod.node));
        self.pending.push(pod.clone());
        Ok(())
    }

    fn start_containers(&mut self) -> Result<(), Error> {
        let pods: Vec<PodDef> = self.manifests.pods.clone();
        self.start_pods(&pods)
    }

    fn start_pods(&mut self, pods: &[PodDef]) -> Result<(), Error> {
        for pod in pods {
            let Some(handle) = self.topology.pod(&pod.namespace, &pod.name).cloned() else {
                continue;
            };
            for c in &pod.containers {
                let launch = launch::container(&self.layout, pod, c, &handle);
                let process = Supervised::start(launch, pod.restart)?;
                self.containers.push(Container { pod: pod.key(), process });
            }
        }
        Ok(())
    }

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
                // A pod added while running starts only once its node agent
                // enrolled it (if it is in the mesh), so none of its
                // traffic leaves uncaptured.
                let pending = std::mem::take(&mut self.pending);
                let (ready, waiting): (Vec<PodDef>, Vec<PodDef>) =
                    pending.into_iter().partition(|pod| {
                        !self.manifests.ambient(pod)
                            || self.enroller.enrolled(&pod.node, &pod.key())
                    });
                self.pending = waiting;
                if let Err(e) = self.start_pods(&ready) {
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
                if let Err(e) = self.add_pod(pod) {
                    notes.push(format!("Pod {}: added while running, but: {e}", pod.key()));
                }
            } else if self.retired.remove(&pod.key()) {
                // Removed, then added again: fresh containers in its namespace.
                let key = pod.key();
                self.containers.retain(|c| c.pod != key);
                log(format_args!("Pod {key}: added again"));
                self.pending.push(pod.clone());
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
        for old in &self.manifests.pods {
            let key = old.key();
            if manifests.pod(&old.namespace, &old.name).is_none() && !self.retired.contains(&key) {
                log(format_args!(
                    "Pod {key}: removed; stopping its containers (its namespace stays until `down`)"
                ));
                self.containers
                    .iter_mut()
                    .filter(|c| c.pod == key)
                    .for_each(|c| c.process.retire());
                self.retired.insert(key);
            }
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
}

/// `/etc/netns/<netns>/resolv.conf`, which `ip netns exec` mounts over
/// the pod's `/etc/resolv.conf`.
fn write_resolv_conf(netns: &str, namespace: &str) -> Result<(), Error> {
    let dir = layout::etc_netns(netns);
    std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    let path = dir.join("resolv.conf");
    std::fs::write(&path, launch::resolv_conf(namespace)).map_err(Error::io("writing", &path))
}

/// The pod namespace name `Topology` gives.
fn pod_netns(prefix: &str, pod: &PodDef) -> String {
    format!("{prefix}-pod-{}-{}", pod.namespace, pod.name)
}
