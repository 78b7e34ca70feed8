//! The admin `/config_dump` view of the store.

use mesh_model::{Authorization, GatewayAddress, GatewayDestination, Service, Workload};
use serde_json::{Value, json};

use super::ProxyState;

impl ProxyState {
    /// Workloads, services (with their endpoint uids) and policies, sorted by
    /// key so that dumps diff cleanly.
    pub fn config_dump(&self) -> Value {
        let mut workloads: Vec<_> = self.workloads.values().collect();
        workloads.sort_by(|a, b| a.uid.cmp(&b.uid));
        let mut services: Vec<_> = self.services.values().collect();
        services.sort_by_key(|s| s.key());
        let mut policies: Vec<_> = self.policies.values().collect();
        policies.sort_by_key(|p| p.key());
        json!({
            "workloads": workloads.iter().map(|w| dump_workload(w)).collect::<Vec<_>>(),
            "services": services.iter().map(|s| self.service(s)).collect::<Vec<_>>(),
            "policies": policies.iter().map(|p| dump_policy(p)).collect::<Vec<_>>(),
        })
    }

    fn service(&self, s: &Service) -> Value {
        let endpoints: Vec<&String> = self.endpoints.get(&s.key()).into_iter().flatten().collect();
        json!({
            "key": s.key().to_string(),
            "name": s.name,
            "namespace": s.namespace,
            "hostname": s.hostname,
            "addresses": s.addresses.iter().map(|a| format!("{}/{}", a.network, a.prefix)).collect::<Vec<_>>(),
            "ports": s.ports.iter().map(|p| json!({"servicePort": p.service_port, "targetPort": p.target_port})).collect::<Vec<_>>(),
            "waypoint": s.waypoint.as_ref().map(gateway),
            "loadBalancing": s.load_balancing.as_ref().map(|lb| format!("{lb:?}")),
            "endpoints": endpoints,
        })
    }
}

fn dump_workload(w: &Workload) -> Value {
    json!({
        "uid": w.uid,
        "name": w.name,
        "namespace": w.namespace,
        "network": w.network,
        "addresses": w.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "hostname": w.hostname,
        "identity": w.identity.to_string(),
        "node": w.node,
        "clusterId": w.cluster_id,
        "status": format!("{:?}", w.status),
        "tunnelProtocol": format!("{:?}", w.tunnel_protocol),
        "waypoint": w.waypoint.as_ref().map(gateway),
        "networkGateway": w.network_gateway.as_ref().map(gateway),
        "services": w.services.keys().map(ToString::to_string).collect::<Vec<_>>(),
        "authorizationPolicies": w.authorization_policies,
        "locality": w.locality.as_ref().map(|l| format!("{}/{}/{}", l.region, l.zone, l.subzone)),
        "capacity": w.capacity,
    })
}

fn dump_policy(p: &Authorization) -> Value {
    json!({
        "key": p.key(),
        "scope": format!("{:?}", p.scope),
        "action": format!("{:?}", p.action),
        "dryRun": p.dry_run,
        "rules": p.rules.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>(),
    })
}

fn gateway(g: &GatewayAddress) -> String {
    match &g.destination {
        GatewayDestination::Hostname(h) => format!("{h}:{}", g.hbone_mtls_port),
        GatewayDestination::Address(a) => format!("{a}:{}", g.hbone_mtls_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::*;
    use mesh_model::{Action, Scope};

    #[test]
    fn dump_lists_everything_by_key() {
        let mut s = ProxyState::default();
        insert_workload(&mut s, endpoint_of("w2", "10.0.0.2", "svc", 80, Some(8080)));
        insert_workload(&mut s, workload("w1", "10.0.0.1"));
        insert_service(&mut s, service("svc", &["10.96.0.1"]));
        s.insert_policy(policy("ns", "p", Scope::Namespace, Action::Deny, vec![]));
        let d = s.config_dump();
        assert_eq!(d["workloads"][0]["uid"], "w1");
        assert_eq!(d["workloads"][1]["services"][0], "ns/svc.ns.svc.cluster.local");
        assert_eq!(d["services"][0]["addresses"][0], "/10.96.0.1/32");
        assert_eq!(d["services"][0]["endpoints"], json!(["w2"]));
        assert_eq!(d["policies"][0]["action"], "Deny");
    }
}
