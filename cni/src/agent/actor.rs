//! The agent's one task: pods, namespaces, the ztunnel connection, and the
//! plugin calls waiting for a verdict. Every input is applied, then
//! [`Actor::reconcile`] moves each pod toward what it should be.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use mesh_netns::Netns;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::pod::{Enrolment, Labels, PodInfo, enrolment};
use super::source::SourceEvent;
use super::{AgentConfig, PluginCall, PodState, PodStatus, StatusMap, procfs};
use crate::report::{PluginReply, PluginRequest, SandboxReport};
use crate::zds::{WorkloadInfo, ZdsClient, ZdsError};

#[path = "actor_waiters.rs"]
mod waiters;

/// How often a pod without a known netns is looked for in `/proc`.
const SCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// After ztunnel refused a pod's Add, the next try waits this long,
/// doubling up to [`ADD_RETRY_MAX`]: a refusal is not retried every tick.
/// (A new connection's snapshot still names the pod: that is the protocol.)
const ADD_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const ADD_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// One pod the source reported.
#[derive(Debug)]
struct Entry {
    pod: PodInfo,
    state: PodState,
    /// The namespace the rules are (or will be) in, and its path.
    netns: Option<(PathBuf, Arc<Netns>)>,
    /// Found in `/proc` for a pod the plugin never reported.
    found: Option<PathBuf>,
    next_scan: Option<Instant>,
    /// The source deleted it: forget it once Outside.
    gone: bool,
    /// When ztunnel confirmed it let the pod go (Removing only); the rules
    /// go `release_grace` later.
    released: Option<Instant>,
    /// Looked for rules left by an earlier agent run (once per entry).
    leftovers_checked: bool,
    /// After a refused Add: when to try again, and the current delay.
    add_retry: Option<(Instant, std::time::Duration)>,
    error: Option<String>,
}

/// A plugin ADD waiting for its verdict.
#[derive(Debug)]
struct Waiter {
    report: SandboxReport,
    reply: oneshot::Sender<PluginReply>,
    deadline: Instant,
}

#[derive(Debug)]
pub(super) struct Actor {
    cfg: AgentConfig,
    pods: BTreeMap<String, Entry>,
    namespaces: HashMap<String, Labels>,
    /// Plugin reports by `namespace/name`: the sandbox's netns and IPs.
    reports: HashMap<String, SandboxReport>,
    /// Pods (`namespace/name`) whose sandbox the plugin's DEL removed and
    /// no ADD has replaced yet: not enrolled, not looked for in `/proc`.
    sandbox_gone: HashSet<String>,
    synced: bool,
    zds: Option<ZdsClient>,
    waiters: Vec<Waiter>,
    status: watch::Sender<StatusMap>,
}

impl Actor {
    pub(super) fn new(cfg: AgentConfig, status: watch::Sender<StatusMap>) -> Self {
        Self {
            cfg,
            pods: BTreeMap::new(),
            namespaces: HashMap::new(),
            reports: HashMap::new(),
            sandbox_gone: HashSet::new(),
            synced: false,
            zds: None,
            waiters: Vec::new(),
            status,
        }
    }

    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<SourceEvent>,
        mut calls: mpsc::Receiver<PluginCall>,
    ) {
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => {
                        tracing::warn!("pod source ended; the agent keeps its last view");
                        events = mpsc::channel(1).1;
                    }
                },
                call = calls.recv() => match call {
                    Some(call) => self.on_call(call),
                    None => return,
                },
                _ = tick.tick() => {}
            }
            self.reconcile().await;
        }
    }

    fn on_event(&mut self, event: SourceEvent) {
        match event {
            SourceEvent::Pod(pod) => match self.pods.get_mut(&pod.uid) {
                Some(entry) => {
                    entry.pod = pod;
                    entry.gone = false;
                }
                None => {
                    let entry = Entry {
                        pod: pod.clone(),
                        state: PodState::Outside,
                        netns: None,
                        found: None,
                        next_scan: None,
                        gone: false,
                        released: None,
                        leftovers_checked: false,
                        add_retry: None,
                        error: None,
                    };
                    self.pods.insert(pod.uid, entry);
                }
            },
            SourceEvent::PodGone { uid } => {
                if let Some(entry) = self.pods.get_mut(&uid) {
                    entry.gone = true;
                }
            }
            SourceEvent::Namespace { name, labels } => {
                self.namespaces.insert(name, labels);
            }
            SourceEvent::NamespaceGone { name } => {
                self.namespaces.remove(&name);
            }
            SourceEvent::Synced => self.synced = true,
        }
    }

    fn on_call(&mut self, call: PluginCall) {
        match call.request {
            PluginRequest::Add(report) => {
                let key = format!("{}/{}", report.namespace, report.name);
                self.sandbox_gone.remove(&key);
                self.reports.insert(key, report.clone());
                let deadline = Instant::now() + self.cfg.plugin_timeout;
                self.waiters.push(Waiter { report, reply: call.reply, deadline });
            }
            PluginRequest::Del(report) => {
                // The sandbox is going: without its netns the pod is no
                // longer enrolled (reconcile un-enrols it).
                let key = format!("{}/{}", report.namespace, report.name);
                let current = self.reports.get(&key).is_none_or(|r| {
                    r.container_id == report.container_id || report.container_id.is_empty()
                });
                if current {
                    self.reports.remove(&key);
                    for entry in self.pods.values_mut().filter(|e| e.pod.key() == key) {
                        entry.found = None;
                    }
                    self.sandbox_gone.insert(key);
                }
                let _ = call.reply.send(PluginReply::Done);
            }
        }
    }

    /// The pod as seen with the plugin's report merged in: the sandbox's
    /// netns (which wins: it is the live one) and IPs.
    fn effective(&self, entry: &Entry) -> (PodInfo, Option<PathBuf>) {
        let mut pod = entry.pod.clone();
        let report = self.reports.get(&pod.key());
        if let Some(report) = report.filter(|_| pod.ips.is_empty()) {
            pod.ips.clone_from(&report.ips);
        }
        let netns = match report {
            Some(r) => r.netns.clone().or_else(|| pod.netns.clone()),
            None if self.sandbox_gone.contains(&pod.key()) => None,
            None => pod.netns.clone().or_else(|| entry.found.clone()),
        };
        (pod, netns)
    }

    fn decide(&self, pod: &PodInfo) -> Enrolment {
        enrolment(self.namespaces.get(&pod.namespace), pod)
    }

    /// Whether the pod should be captured, and in which netns.
    fn wanted(&self, entry: &Entry) -> Option<PathBuf> {
        let (pod, netns) = self.effective(entry);
        if entry.gone || self.decide(&pod) != Enrolment::Enrolled {
            return None;
        }
        netns
    }

    async fn reconcile(&mut self) {
        self.find_netns();
        let uids: Vec<String> = self.pods.keys().cloned().collect();
        // Leaving pods first; then rules for the arriving ones, so that the
        // snapshot below already includes them.
        for uid in &uids {
            self.step_rules(uid).await;
        }
        // Rules are in: say so before waiting on ztunnel.
        self.publish();
        if self.synced {
            self.ensure_zds().await;
        }
        if self.zds.is_some() {
            // ztunnel has acked a snapshot: it serves none of the pods
            // this agent does not want, so their leftover rules can go.
            self.remove_leftovers().await;
        }
        for uid in &uids {
            self.step_zds(uid).await;
        }
        self.pods.retain(|_, e| !(e.gone && e.state == PodState::Outside));
        self.answer_waiters();
        self.publish();
    }

    /// Removes rules an earlier run of the agent left in pods that are no
    /// longer enrolled (relabelled while the agent was down).
    async fn remove_leftovers(&mut self) {
        let unchecked: Vec<(String, PathBuf)> = self
            .pods
            .iter()
            .filter(|(_, e)| e.state == PodState::Outside && !e.leftovers_checked)
            .filter(|(_, e)| self.wanted(e).is_none())
            .filter_map(|(uid, e)| Some((uid.clone(), self.effective(e).1?)))
            .collect();
        let (backend, capture) = (self.cfg.backend, self.cfg.capture.clone());
        for (uid, path) in unchecked {
            let capture = capture.clone();
            let removed = tokio::task::spawn_blocking(move || {
                let netns = Netns::open(&path).map_err(|e| e.to_string())?;
                let found = backend.installed(&netns).map_err(|e| e.to_string())?;
                if found {
                    backend.remove(&netns, &capture).map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(found)
            })
            .await;
            let Some(entry) = self.pods.get_mut(&uid) else { continue };
            entry.leftovers_checked = true;
            match removed {
                Ok(Ok(true)) => {
                    tracing::info!(pod = entry.pod.key(), "removed leftover capture rules")
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(pod = entry.pod.key(), error = %e, "checking for leftover rules")
                }
                Err(e) => {
                    tracing::warn!(pod = entry.pod.key(), error = %e, "leftover check failed")
                }
            }
        }
    }

    /// Looks in `/proc` for the netns of pods that want in but have none.
    fn find_netns(&mut self) {
        if !self.cfg.scan_proc {
            return;
        }
        let now = Instant::now();
        let looking: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| e.next_scan.is_none_or(|t| t <= now))
            .filter(|(_, e)| {
                let (pod, netns) = self.effective(e);
                let looking = netns.is_none() && !e.gone && !self.sandbox_gone.contains(&pod.key());
                looking && self.decide(&pod) == Enrolment::Enrolled
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in looking {
            let found = procfs::find_host_pod_netns(&uid);
            if let Some(entry) = self.pods.get_mut(&uid) {
                tracing::info!(pod = entry.pod.key(), netns = ?found, "looked for the pod's netns in /proc");
                entry.found = found;
                entry.next_scan = Some(now + SCAN_EVERY);
            }
        }
    }

    /// Starts leaving, or installs the rules of an arriving pod.
    async fn step_rules(&mut self, uid: &str) {
        let Some(entry) = self.pods.get(uid) else { return };
        let wanted = self.wanted(entry);
        let opened = entry.netns.as_ref().map(|(p, _)| p.clone());
        let state = entry.state;
        let capture = crate::CaptureConfig {
            redirect_dns: self.cfg.capture.redirect_dns && entry.pod.dns_capture(),
            ..self.cfg.capture.clone()
        };
        let backend = self.cfg.backend;
        let Some(entry) = self.pods.get_mut(uid) else { return };
        match (state, wanted) {
            (PodState::Pending | PodState::Enrolled, None) => {
                tracing::info!(pod = entry.pod.key(), "no longer enrolled; un-enrolling");
                entry.state = PodState::Removing;
            }
            (PodState::Pending | PodState::Enrolled, Some(path))
                if Some(&path) != opened.as_ref() =>
            {
                // A new sandbox: the old netns is on its way out. Enrol the
                // new one (ztunnel replaces the pod on the next Add).
                tracing::info!(pod = entry.pod.key(), netns = %path.display(), "new sandbox");
                entry.netns = None;
                entry.state = PodState::Outside;
                entry.add_retry = None;
                install(entry, path, backend, capture).await;
            }
            (PodState::Outside, Some(path)) => install(entry, path, backend, capture).await,
            _ => {}
        }
    }

    /// Keeps the ztunnel connection up; after (re)connecting, replays the
    /// snapshot.
    async fn ensure_zds(&mut self) {
        if self.zds.as_ref().is_some_and(|c| !c.is_closed()) {
            return;
        }
        if self.zds.take().is_some() {
            tracing::warn!("lost the ztunnel connection; reconnecting");
        }
        let path = &self.cfg.zds_socket;
        let mut client = match ZdsClient::connect_with_timeout(path, self.cfg.zds_timeout).await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "ztunnel not reachable yet");
                return;
            }
        };
        let replay = self.uids_in(|s| matches!(s, PodState::Pending | PodState::Enrolled));
        tracing::info!(pods = replay.len(), "connected to ztunnel; sending the snapshot");
        for uid in &replay {
            if !self.add(&mut client, uid).await {
                return;
            }
        }
        if let Err(e) = client.snapshot_sent().await {
            tracing::warn!(error = %e, "ztunnel refused the snapshot end; reconnecting");
            return;
        }
        // ztunnel dropped every pod the snapshot did not name: the leaving
        // ones are released.
        for uid in self.uids_in(|s| s == PodState::Removing) {
            self.released(&uid);
        }
        self.zds = Some(client);
    }

    /// The pods in a state `pick` accepts.
    fn uids_in(&self, pick: impl Fn(PodState) -> bool) -> Vec<String> {
        self.pods.iter().filter(|(_, e)| pick(e.state)).map(|(uid, _)| uid.clone()).collect()
    }

    /// AddWorkload for `uid`; false when the connection broke.
    async fn add(&mut self, client: &mut ZdsClient, uid: &str) -> bool {
        let Some(entry) = self.pods.get_mut(uid) else { return true };
        let Some((_, netns)) = entry.netns.clone() else { return true };
        let info = WorkloadInfo {
            name: entry.pod.name.clone(),
            namespace: entry.pod.namespace.clone(),
            service_account: entry.pod.service_account.clone(),
        };
        match client.add(uid, info, netns.file()).await {
            Ok(()) => {
                tracing::info!(pod = entry.pod.key(), "enrolled: ztunnel acked");
                entry.state = PodState::Enrolled;
                entry.error = None;
                entry.add_retry = None;
                true
            }
            Err(ZdsError::Rejected(why)) => {
                let delay =
                    entry.add_retry.map_or(ADD_RETRY_FIRST, |(_, d)| (d * 2).min(ADD_RETRY_MAX));
                tracing::warn!(pod = entry.pod.key(), error = %why, retry_in = ?delay, "ztunnel refused the pod");
                entry.add_retry = Some((Instant::now() + delay, delay));
                entry.state = PodState::Pending;
                entry.error = Some(format!("ztunnel refused the pod: {why}"));
                true
            }
            Err(e) => {
                entry.state = PodState::Pending;
                entry.error = Some(format!("ztunnel: {e}"));
                false
            }
        }
    }

    /// ztunnel let go of `uid`: its rules go after the grace period.
    fn released(&mut self, uid: &str) {
        if let Some(entry) = self.pods.get_mut(uid) {
            entry.released.get_or_insert_with(Instant::now);
        }
    }

    /// Hands Pending pods to ztunnel and takes Removing ones back.
    async fn step_zds(&mut self, uid: &str) {
        let Some(entry) = self.pods.get(uid) else { return };
        let (state, released) = (entry.state, entry.released);
        if let Some(at) = released {
            // Removing rules drops the NAT bindings of connections they
            // redirected (see ARCHITECTURE.md): give ztunnel's closing of
            // the pod's sockets time to reach the pod first.
            if at.elapsed() >= self.cfg.release_grace {
                self.remove_rules(uid).await;
            }
            return;
        }
        let waiting = entry.add_retry.is_some_and(|(at, _)| Instant::now() < at);
        if state == PodState::Pending && waiting {
            return;
        }
        let Some(mut client) = self.zds.take() else { return };
        let alive = match state {
            PodState::Pending => self.add(&mut client, uid).await,
            PodState::Removing => match client.del(uid).await {
                Ok(()) => {
                    self.released(uid);
                    true
                }
                Err(ZdsError::Rejected(why)) => {
                    // ztunnel does not serve it: nothing of it to leak.
                    tracing::warn!(pod = uid, error = %why, "ztunnel refused DelWorkload");
                    self.released(uid);
                    true
                }
                Err(e) => {
                    tracing::warn!(pod = uid, error = %e, "DelWorkload failed; retrying after reconnect");
                    false
                }
            },
            PodState::Outside | PodState::Enrolled => true,
        };
        if alive {
            self.zds = Some(client);
        }
    }

    /// ztunnel has let go of `uid`: remove its rules and forget its netns.
    async fn remove_rules(&mut self, uid: &str) {
        let backend = self.cfg.backend;
        let capture = self.cfg.capture.clone();
        let Some(entry) = self.pods.get_mut(uid) else { return };
        if let Some((path, netns)) = entry.netns.take() {
            let removed =
                tokio::task::spawn_blocking(move || backend.remove(&netns, &capture)).await;
            match removed {
                Ok(Ok(())) => tracing::info!(pod = entry.pod.key(), "capture rules removed"),
                // A sandbox that is gone takes its rules with it.
                Ok(Err(e)) => {
                    tracing::info!(pod = entry.pod.key(), netns = %path.display(), error = %e, "removing capture rules")
                }
                Err(e) => {
                    tracing::warn!(pod = entry.pod.key(), error = %e, "rule removal task failed")
                }
            }
        }
        entry.state = PodState::Outside;
        entry.add_retry = None;
        entry.released = None;
        entry.error = None;
    }

    fn publish(&self) {
        let map: BTreeMap<String, PodStatus> = self
            .pods
            .iter()
            .map(|(uid, e)| {
                let status = PodStatus { key: e.pod.key(), state: e.state, error: e.error.clone() };
                (uid.clone(), status)
            })
            .collect();
        self.status.send_if_modified(|old| {
            if **old == map {
                false
            } else {
                *old = Arc::new(map);
                true
            }
        });
    }
}

/// Opens `path` and installs the rules in it; the entry becomes Pending.
async fn install(
    entry: &mut Entry,
    path: PathBuf,
    backend: crate::Backend,
    capture: crate::CaptureConfig,
) {
    let open_path = path.clone();
    let done = tokio::task::spawn_blocking(move || {
        let netns = Netns::open(&open_path).map_err(|e| e.to_string())?;
        backend.apply(&netns, &capture).map_err(|e| e.to_string())?;
        Ok::<_, String>(netns)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match done {
        Ok(netns) => {
            tracing::info!(pod = entry.pod.key(), netns = %path.display(), "capture rules installed");
            entry.netns = Some((path, Arc::new(netns)));
            entry.state = PodState::Pending;
            entry.error = None;
        }
        Err(e) => {
            tracing::warn!(pod = entry.pod.key(), error = %e, "installing capture rules");
            entry.error = Some(format!("installing capture rules: {e}"));
        }
    }
}
