//! Who owns an address: the one rule istiod (when translating) and ztunnel
//! (when looking up an original destination) share, so that a config author
//! cannot make either send a pod's traffic somewhere else.
//!
//! Several objects may claim an address at once: a pod (its IP), a
//! WorkloadEntry or a ServiceEntry endpoint (their address), a Service or a
//! ServiceEntry (a VIP, or a CIDR range of VIPs). Among the claims whose
//! prefix contains the address and that the caller can see ([`visible_to`]),
//! the owner is the first by these criteria, in order:
//!
//! 1. A pod's own IP belongs to the pod. Pods' IPs are assigned by the
//!    cluster, not written by a config author (upstream ztunnel prefers pod
//!    workloads on an address conflict for the same reason: `WorkloadByAddr::get`
//!    ranks a `//Pod/` uid first, "not (generally) spoof-able").
//! 2. The longer prefix: an exact VIP or workload address beats a CIDR, a
//!    longer CIDR beats a shorter one.
//! 3. A claim in the caller's own namespace beats claims in others.
//! 4. A service VIP beats a (non-pod) workload address of the same length
//!    (upstream ztunnel's `find_upstream` looks services up first).
//! 5. The oldest claim (when both creation times are known: istiod knows
//!    them, the wire does not carry them), as upstream resolves ServiceEntry
//!    host conflicts.
//! 6. The smaller key (workload uid or `<namespace>/<hostname>`), so the
//!    answer never depends on iteration order.
//!
//! Pure: no I/O, no state; callers gather the claims from their own indexes.

use std::cmp::Ordering;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::Visibility;

/// What kind of object makes a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Claimant {
    /// A Kubernetes pod's own IP.
    Pod,
    /// Any other workload: a WorkloadEntry, a ServiceEntry endpoint, a
    /// hand-made EndpointSlice endpoint.
    Workload,
    /// A service VIP or VIP range (Kubernetes Service or ServiceEntry).
    Service,
}

/// One object's claim on a prefix (a single address is a full-length prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<K> {
    pub claimant: Claimant,
    pub namespace: String,
    pub prefix: IpNet,
    /// Creation time in any monotonic unit, when known.
    pub created: Option<i128>,
    /// Who claims: a workload uid, a service key, or the caller's own
    /// reference; also the last tie-breaker, so it must be unique per claim.
    pub key: K,
}

impl<K: Ord> Claim<K> {
    /// Whether the claim covers `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.prefix.contains(&ip)
    }

    /// `Less` when `self` owns a contested address rather than `other`, for
    /// a caller in `caller_namespace` (`None`: a caller in no namespace, for
    /// which criterion 3 never applies). See the module docs.
    pub fn rank(&self, other: &Self, caller_namespace: Option<&str>) -> Ordering {
        let pod = |c: &Self| c.claimant != Claimant::Pod;
        let own = |c: &Self| caller_namespace != Some(c.namespace.as_str());
        let workload = |c: &Self| c.claimant != Claimant::Service;
        pod(self)
            .cmp(&pod(other))
            .then_with(|| other.prefix.prefix_len().cmp(&self.prefix.prefix_len()))
            .then_with(|| own(self).cmp(&own(other)))
            .then_with(|| workload(self).cmp(&workload(other)))
            .then_with(|| match (self.created, other.created) {
                (Some(a), Some(b)) => a.cmp(&b),
                _ => Ordering::Equal,
            })
            .then_with(|| self.key.cmp(&other.key))
    }

    /// Whether `self` wins over `other` whoever asks: even a caller in
    /// `other`'s namespace (the one most favourable to `other`) gets `self`.
    /// istiod drops such losers from its output; other conflicts depend on
    /// the caller and are left for the proxy to decide.
    pub fn beats_for_every_caller(&self, other: &Self) -> bool {
        self.rank(other, Some(&other.namespace)) == Ordering::Less
    }
}

/// The owner of `ip` among `claims` for a caller in `caller_namespace`:
/// the first claim containing `ip` by [`Claim::rank`]. Visibility is the
/// caller's business (filter with [`visible_to`] first).
pub fn owner<'c, K: Ord + 'c>(
    claims: impl IntoIterator<Item = &'c Claim<K>>,
    ip: IpAddr,
    caller_namespace: Option<&str>,
) -> Option<&'c Claim<K>> {
    claims.into_iter().filter(|c| c.contains(ip)).min_by(|a, b| a.rank(b, caller_namespace))
}

/// Whether a service with `visibility`, defined in `namespace`, can be seen
/// by a caller in `caller_namespace` (`None`: a caller in no namespace,
/// which sees only public services). A ServiceEntry exported only to its own
/// namespace (`exportTo: ["."]`) is sent as [`Visibility::Namespace`]; it is
/// invisible elsewhere, to address lookups and DNS alike.
pub fn visible_to(visibility: Visibility, namespace: &str, caller_namespace: Option<&str>) -> bool {
    match visibility {
        Visibility::Public => true,
        Visibility::Namespace => caller_namespace == Some(namespace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(claimant: Claimant, ns: &str, prefix: &str, key: &str) -> Claim<String> {
        let prefix =
            prefix.parse().unwrap_or_else(|_| IpNet::from(prefix.parse::<IpAddr>().unwrap()));
        Claim { claimant, namespace: ns.into(), prefix, created: None, key: key.into() }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn owner_key(claims: &[Claim<String>], addr: &str, caller: Option<&str>) -> Option<String> {
        owner(claims, ip(addr), caller).map(|c| c.key.clone())
    }

    #[test]
    fn a_pod_keeps_its_ip_against_every_other_claim() {
        let claims = vec![
            claim(Claimant::Service, "evil", "10.244.0.0/16", "evil/range"),
            claim(Claimant::Service, "evil", "10.244.0.10", "evil/vip"),
            claim(Claimant::Workload, "evil", "10.244.0.10", "we-evil"),
            claim(Claimant::Pod, "shop", "10.244.0.10", "pod-web"),
        ];
        for caller in [None, Some("evil"), Some("shop"), Some("other")] {
            assert_eq!(owner_key(&claims, "10.244.0.10", caller).as_deref(), Some("pod-web"));
        }
        // An address no pod has goes to the most specific remaining claim.
        assert_eq!(owner_key(&claims, "10.244.7.7", None).as_deref(), Some("evil/range"));
        assert!(claims[3].beats_for_every_caller(&claims[2]));
        assert!(claims[3].beats_for_every_caller(&claims[0]));
    }

    #[test]
    fn exact_beats_cidr_and_longer_prefixes_beat_shorter() {
        let claims = vec![
            claim(Claimant::Service, "a", "10.0.0.0/8", "a/wide"),
            claim(Claimant::Service, "a", "10.1.0.0/16", "a/narrow"),
            claim(Claimant::Service, "b", "10.1.2.3", "b/exact"),
        ];
        assert_eq!(owner_key(&claims, "10.1.2.3", Some("a")).as_deref(), Some("b/exact"));
        assert_eq!(owner_key(&claims, "10.1.9.9", Some("a")).as_deref(), Some("a/narrow"));
        assert_eq!(owner_key(&claims, "10.9.9.9", Some("b")).as_deref(), Some("a/wide"));
        assert_eq!(owner_key(&claims, "11.0.0.1", None), None);
    }

    #[test]
    fn the_callers_namespace_beats_others_then_services_then_age_then_key() {
        let mut older = claim(Claimant::Service, "b", "240.0.0.1", "b/x");
        older.created = Some(1);
        let mut younger = claim(Claimant::Service, "a", "240.0.0.1", "a/x");
        younger.created = Some(2);
        let claims = vec![older.clone(), younger.clone()];
        assert_eq!(owner_key(&claims, "240.0.0.1", Some("a")).as_deref(), Some("a/x"));
        assert_eq!(owner_key(&claims, "240.0.0.1", Some("b")).as_deref(), Some("b/x"));
        assert_eq!(owner_key(&claims, "240.0.0.1", Some("c")).as_deref(), Some("b/x"), "oldest");
        // Without creation times (as ztunnel sees them), the key decides.
        let unaged: Vec<_> =
            [older, younger].into_iter().map(|c| Claim { created: None, ..c }).collect();
        assert_eq!(owner_key(&unaged, "240.0.0.1", Some("c")).as_deref(), Some("a/x"));
        // Neither wins for every caller: each wins in its own namespace.
        assert!(!unaged[0].beats_for_every_caller(&unaged[1]));
        assert!(!unaged[1].beats_for_every_caller(&unaged[0]));
        // A VIP beats a non-pod workload address of the same length.
        let mixed = vec![
            claim(Claimant::Workload, "c", "240.0.0.1", "a-workload"),
            claim(Claimant::Service, "c", "240.0.0.1", "c/x"),
        ];
        assert_eq!(owner_key(&mixed, "240.0.0.1", None).as_deref(), Some("c/x"));
    }

    #[test]
    fn the_answer_does_not_depend_on_order() {
        let claims = vec![
            claim(Claimant::Workload, "a", "10.0.0.1", "w2"),
            claim(Claimant::Workload, "a", "10.0.0.1", "w1"),
            claim(Claimant::Workload, "b", "10.0.0.1", "w0"),
        ];
        let mut reversed = claims.clone();
        reversed.reverse();
        for caller in [None, Some("a"), Some("b")] {
            assert_eq!(
                owner_key(&claims, "10.0.0.1", caller),
                owner_key(&reversed, "10.0.0.1", caller)
            );
        }
        assert_eq!(owner_key(&claims, "10.0.0.1", Some("a")).as_deref(), Some("w1"));
        // Same namespace: decided for every caller.
        assert!(claims[1].beats_for_every_caller(&claims[0]));
    }

    #[test]
    fn namespace_private_services_are_visible_only_at_home() {
        assert!(visible_to(Visibility::Public, "a", None));
        assert!(visible_to(Visibility::Public, "a", Some("b")));
        assert!(visible_to(Visibility::Namespace, "a", Some("a")));
        assert!(!visible_to(Visibility::Namespace, "a", Some("b")));
        assert!(!visible_to(Visibility::Namespace, "a", None));
    }
}
