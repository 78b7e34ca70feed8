//! Which names the mesh answers, and with what.
//!
//! A query name (lowercased, without the trailing dot) is looked up as is,
//! then in the short forms a pod's search path implies (`<svc>` in the
//! pod's own namespace, `<svc>.<ns>`, `<svc>.<ns>.svc`), then against
//! wildcard ServiceEntry hosts (`*.example.com`, most specific first).
//! Names under `svc.<cluster domain>` that the mesh does not know, and
//! names carrying the cluster domain twice (a search-path suffix appended
//! to a full name), do not exist: NXDOMAIN. Everything else is forwarded.

use std::net::IpAddr;
use std::sync::Arc;

use mesh_model::Service;

use crate::state::ProxyState;

/// What the mesh says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A name the mesh knows, with all its addresses (both families).
    Found(Vec<IpAddr>),
    /// A name the mesh owns that does not exist.
    NxDomain,
    /// Not the mesh's: ask the upstream resolvers.
    Forward,
}

/// Looks `name` up for a pod in `namespace`. `name` must be lowercase
/// without a trailing dot; `domain` is the cluster domain (`cluster.local`).
pub fn lookup(state: &ProxyState, domain: &str, namespace: &str, name: &str) -> Lookup {
    for candidate in candidates(domain, namespace, name) {
        if let Some(addresses) = addresses_of(state, namespace, &candidate) {
            return Lookup::Found(addresses);
        }
    }
    // Wildcard hosts, most specific first: a.b.example.com tries
    // *.b.example.com, then *.example.com, then *.com.
    let mut rest = name;
    while let Some((_, parent)) = rest.split_once('.') {
        if let Some(addresses) = addresses_of(state, namespace, &format!("*.{parent}")) {
            return Lookup::Found(addresses);
        }
        rest = parent;
    }
    if owned_but_missing(domain, name) { Lookup::NxDomain } else { Lookup::Forward }
}

/// `name` itself, then the expansion its search-path short form implies.
fn candidates(domain: &str, namespace: &str, name: &str) -> Vec<String> {
    let mut out = vec![name.to_owned()];
    let labels: Vec<&str> = name.split('.').collect();
    match labels.as_slice() {
        [svc] => out.push(format!("{svc}.{namespace}.svc.{domain}")),
        [svc, ns] => out.push(format!("{svc}.{ns}.svc.{domain}")),
        [svc, ns, "svc"] => out.push(format!("{svc}.{ns}.svc.{domain}")),
        _ => {}
    }
    out
}

/// The addresses `host` resolves to, if a service has it as its hostname
/// and has something to answer with: its VIPs (exact addresses, not CIDR
/// ranges), or for a service without any (headless) the addresses of its
/// ready endpoints. A service in the pod's own namespace wins over the same
/// host in another namespace; a service not exported to the pod's namespace
/// (ServiceEntry `exportTo`) is invisible to it.
fn addresses_of(state: &ProxyState, namespace: &str, host: &str) -> Option<Vec<IpAddr>> {
    let services = state.services_by_hostname_for(host, Some(namespace));
    let chosen: Option<&Arc<Service>> =
        services.iter().find(|s| s.namespace == namespace).or_else(|| services.first());
    let service = chosen?;
    let addresses: Vec<IpAddr> = if service.addresses.is_empty() {
        state.ready_endpoint_addresses(&service.key())
    } else {
        service
            .addresses
            .iter()
            .filter(|a| a.prefix.prefix_len() == a.prefix.max_prefix_len())
            .map(|a| a.prefix.addr())
            .collect()
    };
    (!addresses.is_empty()).then_some(addresses)
}

/// Whether `name` is `domain` or under it (both lowercase, no trailing dot).
pub fn in_domain(domain: &str, name: &str) -> bool {
    name == domain || name.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
}

/// Whether the mesh owns `name` (so that an unknown one does not exist):
/// `<svc>.<ns>.svc.<domain>`, or any name under `<domain>` that carries the
/// domain again before it (`x.<ns>.svc.<domain>.<ns>.svc.<domain>`, what a
/// resolver tries when it appends its search path to a full name).
fn owned_but_missing(domain: &str, name: &str) -> bool {
    let Some(prefix) = name.strip_suffix(domain).and_then(|p| p.strip_suffix('.')) else {
        return false;
    };
    if prefix.ends_with(&format!(".{domain}")) || prefix.contains(&format!(".{domain}.")) {
        return true;
    }
    prefix.strip_suffix(".svc").is_some_and(|service| service.split('.').count() == 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::*;
    use mesh_model::WorkloadStatus;

    fn state() -> ProxyState {
        let mut s = ProxyState::default();
        insert_service(&mut s, service("web", &["10.96.0.1"]));
        let mut other = service("web", &["10.96.9.9"]);
        other.namespace = "other".into();
        other.hostname = "web.other.svc.cluster.local".into();
        insert_service(&mut s, other);
        let mut entry = service("ext", &["192.0.2.1", "2001:db8::1"]);
        entry.hostname = "api.example.com".into();
        insert_service(&mut s, entry);
        let mut wildcard = service("wild", &["192.0.2.9"]);
        wildcard.hostname = "*.example.com".into();
        insert_service(&mut s, wildcard);
        insert_service(&mut s, service("db", &[]));
        insert_workload(&mut s, endpoint_of("db-0", "10.0.0.1", "db", 80, None));
        insert_workload(&mut s, endpoint_of("db-1", "10.0.0.2", "db", 80, None));
        let mut down = endpoint_of("db-2", "10.0.0.3", "db", 80, None);
        down.status = WorkloadStatus::Unhealthy;
        insert_workload(&mut s, down);
        s
    }

    #[test]
    fn a_service_not_exported_to_the_pods_namespace_is_invisible_to_its_dns() {
        let mut s = state();
        let mut private = service("secret", &["240.240.0.7"]);
        private.namespace = "other".into();
        private.hostname = "secret.example.internal".into();
        private.visibility = mesh_model::Visibility::Namespace;
        insert_service(&mut s, private);
        let host = "secret.example.internal";
        assert_eq!(
            lookup(&s, "cluster.local", "other", host),
            Lookup::Found(vec![ip("240.240.0.7")]),
            "its own namespace sees it"
        );
        assert_eq!(
            lookup(&s, "cluster.local", "ns", host),
            Lookup::Forward,
            "another namespace must not learn the address of a ServiceEntry not exported to it"
        );
    }

    fn look(name: &str) -> Lookup {
        lookup(&state(), "cluster.local", "ns", name)
    }

    fn found(addrs: &[&str]) -> Lookup {
        Lookup::Found(addrs.iter().map(|a| ip(a)).collect())
    }

    #[test]
    fn full_and_search_path_short_forms_resolve_to_the_vip() {
        for name in ["web.ns.svc.cluster.local", "web", "web.ns", "web.ns.svc"] {
            assert_eq!(look(name), found(&["10.96.0.1"]), "{name}");
        }
        // The short form is relative to the pod's namespace.
        assert_eq!(lookup(&state(), "cluster.local", "other", "web"), found(&["10.96.9.9"]));
        assert_eq!(look("web.other"), found(&["10.96.9.9"]));
    }

    #[test]
    fn service_entry_hosts_and_wildcards() {
        assert_eq!(look("api.example.com"), found(&["192.0.2.1", "2001:db8::1"]));
        assert_eq!(look("other.example.com"), found(&["192.0.2.9"]));
        assert_eq!(look("a.b.example.com"), found(&["192.0.2.9"]));
        assert_eq!(look("example.com"), Lookup::Forward, "the wildcard does not cover its parent");
    }

    #[test]
    fn headless_services_resolve_to_ready_endpoints() {
        assert_eq!(look("db.ns.svc.cluster.local"), found(&["10.0.0.1", "10.0.0.2"]));
    }

    #[test]
    fn unknown_mesh_names_do_not_exist_and_the_rest_is_forwarded() {
        for name in [
            "nosuch.ns.svc.cluster.local",
            "web.ns.svc.cluster.local.ns.svc.cluster.local",
            "web.ns.svc.cluster.local.svc.cluster.local",
        ] {
            assert_eq!(look(name), Lookup::NxDomain, "{name}");
        }
        for name in [
            "www.example.org",
            "nosuch",
            "web-0.web.ns.svc.cluster.local",
            "ns.svc.cluster.local",
            "cluster.local",
        ] {
            assert_eq!(look(name), Lookup::Forward, "{name}");
        }
    }

    #[test]
    fn service_entries_without_addresses_or_endpoints_are_forwarded() {
        let mut s = state();
        let mut entry = service("noaddr", &[]);
        entry.hostname = "noaddr.example.org".into();
        insert_service(&mut s, entry);
        assert_eq!(lookup(&s, "cluster.local", "ns", "noaddr.example.org"), Lookup::Forward);
    }

    #[test]
    fn cidr_addresses_are_not_answers() {
        let mut s = ProxyState::default();
        let mut entry = service("range", &["192.0.2.0/24"]);
        entry.hostname = "range.example.org".into();
        insert_service(&mut s, entry);
        assert_eq!(lookup(&s, "cluster.local", "ns", "range.example.org"), Lookup::Forward);
    }
}
