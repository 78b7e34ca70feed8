//! Address ownership in istiod's output, by the rule shared with ztunnel
//! ([`mesh_model::ownership`]): a pod keeps its IP against a WorkloadEntry,
//! a ServiceEntry endpoint or an EndpointSlice endpoint claiming it, and a
//! claim that loses for every caller is removed from the loser's workload;
//! the loser's status says so. Conflicts whose winner depends on the
//! caller's namespace are left for ztunnel to decide per connection.
//! ServiceEntry VIPs and ranges covering pod IPs are reported on the entry
//! (ztunnel sends traffic to those IPs to the pods).
//!
//! [`AddressClaims`] indexes every workload's claims by address; the full
//! translation builds it at once, the engine keeps it up to date and uses
//! [`AddressClaims::co_claimants`] to recompute the objects whose output an
//! ownership change touches.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use mesh_model::ownership::{Claim, Claimant};
use mesh_proto::workload::Workload;

use super::crd::ServiceEntry;
use super::services::parse_address;
use super::status::{Condition, ObjectStatus};
use super::{Config, ObjectKey, Snapshot};

/// Reason of the conditions written for address conflicts.
pub const REASON_ADDRESS_CONFLICT: &str = "AddressConflict";

/// The kinds of objects that produce workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    Pod,
    WorkloadEntry,
    ServiceEntry,
    EndpointSlice,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::WorkloadEntry => "WorkloadEntry",
            Self::ServiceEntry => "ServiceEntry",
            Self::EndpointSlice => "EndpointSlice",
        }
    }
}

/// An object that produces workloads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    pub kind: SourceKind,
    pub key: ObjectKey,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.name(), self.key.namespace, self.key.name)
    }
}

/// `(network, ip)`.
type NetworkIp = (String, IpAddr);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Claimed {
    source: Source,
    claim: Claim<String>,
}

/// Every workload's claims on addresses, and ServiceEntry VIPs and ranges.
#[derive(Debug, Clone, Default)]
pub struct AddressClaims {
    /// `(network, ip)` -> workload uid -> its claim.
    by_ip: BTreeMap<NetworkIp, BTreeMap<String, Claimed>>,
    by_source: BTreeMap<Source, BTreeSet<(NetworkIp, String)>>,
    /// ServiceEntry -> its VIPs and ranges.
    entry_prefixes: BTreeMap<Source, Vec<(String, IpNet)>>,
}

/// Creation time of an object, as the ordering key of the rule.
fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<i128> {
    meta.creation_timestamp.as_ref().map(|t| t.0.as_nanosecond())
}

/// Creation time of a source object in the snapshot.
fn created_of(snap: &Snapshot, source: &Source) -> Option<i128> {
    let key = &source.key;
    match source.kind {
        SourceKind::Pod => snap.pods.get(key).and_then(|o| created(&o.metadata)),
        SourceKind::WorkloadEntry => {
            snap.workload_entries.get(key).and_then(|o| created(&o.metadata))
        }
        SourceKind::ServiceEntry => {
            snap.service_entries.get(key).and_then(|o| created(&o.metadata))
        }
        SourceKind::EndpointSlice => {
            snap.endpoint_slices.get(key).and_then(|o| created(&o.metadata))
        }
    }
}

fn workload_ips(w: &Workload) -> impl Iterator<Item = IpAddr> + '_ {
    w.addresses.iter().filter_map(|a| mesh_model::ip_from_bytes("Workload.addresses", a).ok())
}

/// The VIPs and ranges of a ServiceEntry that parse.
fn entry_prefixes(cfg: &Config, se: &ServiceEntry) -> Vec<(String, IpNet)> {
    se.spec
        .addresses
        .iter()
        .filter_map(|a| parse_address(a))
        .map(|net| (cfg.network.clone(), net))
        .collect()
}

impl AddressClaims {
    /// Replaces the claims of `source` with those of `workloads` (what it
    /// produces before ownership is settled; empty when it is gone). Returns
    /// the addresses whose claims changed or were touched.
    pub fn replace(
        &mut self,
        cfg: &Config,
        snap: &Snapshot,
        source: &Source,
        workloads: &[Workload],
    ) -> BTreeSet<NetworkIp> {
        let mut touched = BTreeSet::new();
        for (address, uid) in self.by_source.remove(source).unwrap_or_default() {
            if let Some(claims) = self.by_ip.get_mut(&address) {
                claims.remove(&uid);
                if claims.is_empty() {
                    self.by_ip.remove(&address);
                }
            }
            touched.insert(address);
        }
        self.entry_prefixes.remove(source);
        let entry = snap.service_entries.get(&source.key);
        if let Some(se) = entry.filter(|_| source.kind == SourceKind::ServiceEntry) {
            let prefixes = entry_prefixes(cfg, se);
            if !prefixes.is_empty() {
                self.entry_prefixes.insert(source.clone(), prefixes);
            }
        }
        let created = created_of(snap, source);
        let claimant =
            if source.kind == SourceKind::Pod { Claimant::Pod } else { Claimant::Workload };
        let mut mine = BTreeSet::new();
        for w in workloads {
            for ip in workload_ips(w) {
                let address = (w.network.clone(), ip);
                let claim = Claim {
                    claimant,
                    namespace: w.namespace.clone(),
                    prefix: ip.into(),
                    created,
                    key: w.uid.clone(),
                };
                self.by_ip
                    .entry(address.clone())
                    .or_default()
                    .insert(w.uid.clone(), Claimed { source: source.clone(), claim });
                mine.insert((address.clone(), w.uid.clone()));
                touched.insert(address);
            }
        }
        if !mine.is_empty() {
            self.by_source.insert(source.clone(), mine);
        }
        touched
    }

    /// The sources whose output may change when the claims on `addresses`
    /// change: every other claimant of those addresses, and the
    /// ServiceEntries whose VIPs or ranges cover them (their conditions).
    pub fn co_claimants(&self, addresses: &BTreeSet<NetworkIp>) -> BTreeSet<Source> {
        let mut out = BTreeSet::new();
        for address in addresses {
            out.extend(
                self.by_ip.get(address).into_iter().flatten().map(|(_, c)| c.source.clone()),
            );
            for (source, prefixes) in &self.entry_prefixes {
                if prefixes.iter().any(|(n, net)| *n == address.0 && net.contains(&address.1)) {
                    out.insert(source.clone());
                }
            }
        }
        out
    }

    /// Removes from `workload` every address another workload owns for
    /// every caller, and says why in conditions for its source.
    pub fn settle(&self, workload: &mut Workload) -> Vec<Condition> {
        let mut conditions = Vec::new();
        let mut kept = Vec::new();
        for bytes in std::mem::take(&mut workload.addresses) {
            let Ok(ip) = mesh_model::ip_from_bytes("Workload.addresses", &bytes) else {
                kept.push(bytes);
                continue;
            };
            let claims = self.by_ip.get(&(workload.network.clone(), ip));
            let mine = claims.and_then(|c| c.get(&workload.uid));
            let winner = mine.and_then(|mine| {
                claims
                    .into_iter()
                    .flatten()
                    .filter(|(uid, _)| **uid != workload.uid)
                    .map(|(_, c)| c)
                    .filter(|c| c.claim.beats_for_every_caller(&mine.claim))
                    .min_by(|a, b| a.claim.rank(&b.claim, None))
            });
            match winner {
                Some(w) => conditions.push(Condition::accepted_with_warning(
                    REASON_ADDRESS_CONFLICT,
                    format!(
                        "address {ip} belongs to {}, which owns it ({}); workload {} is sent without it",
                        w.source,
                        why(&w.claim, mine.map(|m| &m.claim)),
                        workload.uid
                    ),
                )),
                None => kept.push(bytes),
            }
        }
        workload.addresses = kept;
        conditions
    }

    /// Conditions of a ServiceEntry whose VIPs or ranges cover pod IPs.
    pub fn entry_conditions(&self, source: &Source) -> Vec<Condition> {
        let Some(prefixes) = self.entry_prefixes.get(source) else { return Vec::new() };
        let mut out = Vec::new();
        for (network, net) in prefixes {
            let first = (network.clone(), net.network());
            let last = (network.clone(), net.broadcast());
            let pods: Vec<&Source> = self
                .by_ip
                .range(first..=last)
                .flat_map(|(_, claims)| claims.values())
                .filter(|c| c.claim.claimant == Claimant::Pod)
                .map(|c| &c.source)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if pods.is_empty() {
                continue;
            }
            let shown: Vec<String> = pods.iter().take(3).map(|p| p.to_string()).collect();
            let more = pods.len().saturating_sub(shown.len());
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            out.push(Condition::accepted_with_warning(
                REASON_ADDRESS_CONFLICT,
                format!(
                    "address {net} covers the IPs of {} pod(s) ({}{more}); a pod's IP belongs to the pod, so traffic to them is not sent to this ServiceEntry",
                    pods.len(),
                    shown.join(", ")
                ),
            ));
        }
        out
    }

    /// The conditions of `source` for its settled workloads, as a status.
    pub fn status_of(source: &Source, conditions: Vec<Condition>) -> Option<ObjectStatus> {
        (!conditions.is_empty()).then(|| {
            ObjectStatus::new(
                source.kind.name(),
                &source.key.namespace,
                &source.key.name,
                conditions,
            )
        })
    }
}

/// Which criterion of the rule decided between `winner` and `loser`.
fn why(winner: &Claim<String>, loser: Option<&Claim<String>>) -> &'static str {
    match loser {
        Some(l) if winner.claimant == Claimant::Pod && l.claimant != Claimant::Pod => {
            "a pod's IP belongs to the pod"
        }
        Some(l) if winner.created.is_some() && winner.created < l.created => {
            "same namespace, created earlier"
        }
        _ => "same namespace, earlier by name",
    }
}

/// Every workload of the snapshot with its source (before ownership is
/// settled), in the order of [`super::workloads::all_workloads`].
pub fn sourced_workloads(cfg: &Config, snap: &Snapshot) -> Vec<(Source, Vec<Workload>)> {
    let source = |kind, key: &ObjectKey| Source { kind, key: key.clone() };
    let mut out = Vec::new();
    for (key, pod) in &snap.pods {
        let w: Vec<Workload> = super::workloads::pod_workload(cfg, snap, pod).into_iter().collect();
        out.push((source(SourceKind::Pod, key), w));
    }
    for (key, we) in &snap.workload_entries {
        let w = super::entries::workload_entry_workload(cfg, snap, we).into_iter().collect();
        out.push((source(SourceKind::WorkloadEntry, key), w));
    }
    for (key, se) in &snap.service_entries {
        let w = super::entries::service_entry_workloads(cfg, snap, se);
        out.push((source(SourceKind::ServiceEntry, key), w));
    }
    for (key, slice) in &snap.endpoint_slices {
        let w = super::endpoint_slices::endpoint_slice_workloads(cfg, snap, slice);
        out.push((source(SourceKind::EndpointSlice, key), w));
    }
    out
}

/// Settles the workloads of one source against `claims`: addresses lost
/// for every caller are removed; the conditions (including a
/// ServiceEntry's VIP overlaps) come back as the source's status.
pub fn settle_source(
    claims: &AddressClaims,
    source: &Source,
    workloads: &mut [Workload],
) -> Option<ObjectStatus> {
    let mut conditions: Vec<Condition> =
        workloads.iter_mut().flat_map(|w| claims.settle(w)).collect();
    if source.kind == SourceKind::ServiceEntry {
        conditions.extend(claims.entry_conditions(source));
    }
    AddressClaims::status_of(source, conditions)
}

/// Every workload of the snapshot, ownership settled; conditions go to
/// `statuses`.
pub fn settled_workloads(
    cfg: &Config,
    snap: &Snapshot,
    statuses: &mut Vec<ObjectStatus>,
) -> Vec<Workload> {
    let mut sourced = sourced_workloads(cfg, snap);
    let mut claims = AddressClaims::default();
    for (source, workloads) in &sourced {
        claims.replace(cfg, snap, source, workloads);
    }
    let mut out = Vec::new();
    for (source, workloads) in &mut sourced {
        statuses.extend(settle_source(&claims, source, workloads));
        out.append(workloads);
    }
    out
}
