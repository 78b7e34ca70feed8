//! xDS glue: decode `Address` and `Authorization` resources, convert them
//! with `mesh_model`, and apply each response to the shared state in one
//! short write-locked step. Bad resources are rejected with a reason (and
//! end up in the NACK); the good ones of the same response still apply.

use mesh_model::{Address, Authorization, Scope};
use mesh_proto::{security, workload};
use mesh_xds::client::{Rejection, ResourceHandler, Update};
use prost::Message;

use super::{RejectedPolicy, StateHandle};

/// Applies `istio.workload.Address` resources (workloads and services).
#[derive(Debug, Clone)]
pub struct AddressHandler {
    state: StateHandle,
}

impl AddressHandler {
    pub fn new(state: StateHandle) -> Self {
        Self { state }
    }
}

/// Applies `istio.security.Authorization` resources.
#[derive(Debug, Clone)]
pub struct AuthorizationHandler {
    state: StateHandle,
}

impl AuthorizationHandler {
    pub fn new(state: StateHandle) -> Self {
        Self { state }
    }
}

/// Decodes and validates every update (outside the lock), keeping the good
/// ones with their names and turning the bad ones into rejections.
fn decode_all<P, T>(updates: Vec<Update>, rejected: &mut Vec<Rejection>) -> Vec<(String, T)>
where
    P: Message + Default,
    T: TryFrom<P, Error = mesh_model::ModelError>,
{
    let mut good = Vec::with_capacity(updates.len());
    for u in updates {
        let converted = P::decode(u.resource.value.as_slice())
            .map_err(|e| format!("undecodable: {e}"))
            .and_then(|p| T::try_from(p).map_err(|e| format!("invalid: {e}")));
        match converted {
            Ok(t) => good.push((u.name, t)),
            Err(reason) => {
                tracing::warn!(name = %u.name, %reason, "rejecting xDS resource");
                rejected.push(Rejection { name: u.name, reason });
            }
        }
    }
    good
}

impl ResourceHandler for AddressHandler {
    fn apply(&mut self, updates: Vec<Update>, removals: Vec<String>) -> Vec<Rejection> {
        let mut rejected = Vec::new();
        let good = decode_all::<workload::Address, Address>(updates, &mut rejected);
        self.state.write(|s| {
            for name in &removals {
                s.remove_address(name);
            }
            for (name, address) in good {
                if let Err(e) = s.insert_address(&name, address) {
                    rejected.push(Rejection { name, reason: e.to_string() });
                }
            }
        });
        rejected
    }
}

impl ResourceHandler for AuthorizationHandler {
    /// Bad policies are NACKed like bad addresses, and also recorded as
    /// rejected: the workloads they are bound to are denied (fail closed)
    /// instead of keeping a last good version that may allow more.
    fn apply(&mut self, updates: Vec<Update>, removals: Vec<String>) -> Vec<Rejection> {
        let bindings: Vec<(String, RejectedPolicy)> =
            updates.iter().map(|u| (u.name.clone(), binding_of(u))).collect();
        let mut rejected = Vec::new();
        let good = decode_all::<security::Authorization, Authorization>(updates, &mut rejected);
        self.state.write(|s| {
            for name in &removals {
                s.remove_policy(name);
            }
            for (name, policy) in good {
                let key = policy.key();
                if key == name {
                    s.insert_policy(policy);
                } else {
                    let reason = format!("resource name does not match the policy's key {key:?}");
                    rejected.push(Rejection { name, reason });
                }
            }
            for r in &rejected {
                if let Some((_, binding)) = bindings.iter().find(|(n, _)| *n == r.name) {
                    let binding = RejectedPolicy { reason: r.reason.clone(), ..binding.clone() };
                    s.reject_policy(&r.name, binding);
                }
            }
        });
        rejected
    }
}

/// Where a policy update would bind, read as far as it decodes: its scope
/// and namespace from the resource, else the namespace from its name
/// (`<namespace>/<name>`). The reason is filled in once it is rejected.
fn binding_of(update: &Update) -> RejectedPolicy {
    let from_name = update.name.split_once('/').map(|(ns, _)| ns.to_owned()).unwrap_or_default();
    let decoded = security::Authorization::decode(update.resource.value.as_slice()).ok();
    let scope = decoded.as_ref().and_then(|p| match security::Scope::try_from(p.scope) {
        Ok(security::Scope::Global) => Some(Scope::Global),
        Ok(security::Scope::Namespace) => Some(Scope::Namespace),
        Ok(security::Scope::WorkloadSelector) => Some(Scope::WorkloadSelector),
        Err(_) => None,
    });
    let namespace = decoded.map(|p| p.namespace).filter(|ns| !ns.is_empty() && *ns == from_name);
    RejectedPolicy {
        // A resource whose own namespace disagrees with its name binds by
        // the name (what workloads list), and as widely as that allows.
        scope: if namespace.is_some() { scope } else { None },
        namespace: from_name,
        reason: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::type_url;
    use prost_types::Any;

    fn update(name: &str, url: &str, value: Vec<u8>) -> Update {
        Update {
            name: name.into(),
            version: "1".into(),
            resource: Any { type_url: url.into(), value },
        }
    }

    fn pb_workload(uid: &str, addr: Vec<u8>) -> Vec<u8> {
        workload::Address {
            r#type: Some(workload::address::Type::Workload(workload::Workload {
                uid: uid.into(),
                name: "w".into(),
                namespace: "ns".into(),
                addresses: vec![addr],
                ..Default::default()
            })),
        }
        .encode_to_vec()
    }

    fn pb_service(name: &str) -> Vec<u8> {
        workload::Address {
            r#type: Some(workload::address::Type::Service(workload::Service {
                name: name.into(),
                namespace: "ns".into(),
                hostname: format!("{name}.ns"),
                ..Default::default()
            })),
        }
        .encode_to_vec()
    }

    fn pb_policy(name: &str, scope: i32) -> Vec<u8> {
        security::Authorization {
            name: name.into(),
            namespace: "ns".into(),
            scope,
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn reasons(r: &[Rejection]) -> Vec<(&str, &str)> {
        r.iter().map(|r| (r.name.as_str(), r.reason.as_str())).collect()
    }

    #[test]
    fn address_handler_applies_good_and_rejects_bad() {
        let state = StateHandle::default();
        let mut h = AddressHandler::new(state.clone());
        let a = type_url::ADDRESS;
        let rejected = h.apply(
            vec![
                update("w1", a, pb_workload("w1", vec![10, 0, 0, 1])),
                update("ns/svc.ns", a, pb_service("svc")),
                update("garbage", a, vec![0xff, 0xff, 0xff]),
                update("w2", a, pb_workload("w2", vec![1, 2, 3])),
                update("alias", a, pb_workload("w3", vec![10, 0, 0, 3])),
                update("empty", a, workload::Address { r#type: None }.encode_to_vec()),
            ],
            vec![],
        );
        let got = reasons(&rejected);
        assert_eq!(
            got.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec!["garbage", "w2", "empty", "alias"]
        );
        assert!(got[0].1.starts_with("undecodable: "), "{}", got[0].1);
        assert!(got[1].1.contains("4 or 16 bytes"), "{}", got[1].1);
        assert!(got[2].1.contains("Address.type"), "{}", got[2].1);
        assert!(got[3].1.contains("does not match"), "{}", got[3].1);
        {
            let s = state.read();
            assert_eq!((s.workload_count(), s.service_count()), (1, 1));
            assert!(s.workload_by_uid("w1").is_some());
        }
        let rejected = h.apply(vec![], vec!["w1".into(), "ns/svc.ns".into(), "nope".into()]);
        assert!(rejected.is_empty());
        let s = state.read();
        assert_eq!((s.workload_count(), s.service_count()), (0, 0));
    }

    #[test]
    fn bad_update_leaves_the_held_version_untouched() {
        let state = StateHandle::default();
        let mut h = AddressHandler::new(state.clone());
        let a = type_url::ADDRESS;
        assert!(
            h.apply(vec![update("w1", a, pb_workload("w1", vec![10, 0, 0, 1]))], vec![]).is_empty()
        );
        let rejected = h.apply(vec![update("w1", a, pb_workload("w1", vec![10]))], vec![]);
        assert_eq!(rejected.len(), 1);
        let held = state.read().workload_by_uid("w1").unwrap();
        assert_eq!(held.addresses, vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
    }

    #[test]
    fn authorization_handler_applies_good_and_rejects_bad() {
        let state = StateHandle::default();
        let mut h = AuthorizationHandler::new(state.clone());
        let t = type_url::AUTHORIZATION;
        let rejected = h.apply(
            vec![
                update("ns/p", t, pb_policy("p", 0)),
                update("ns/bad-scope", t, pb_policy("bad-scope", 9)),
                update("ns/garbage", t, b"\x0a\xff".to_vec()),
                update("ns/misnamed", t, pb_policy("other", 0)),
            ],
            vec![],
        );
        let names: Vec<_> = reasons(&rejected).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["ns/bad-scope", "ns/garbage", "ns/misnamed"]);
        assert!(rejected[0].reason.contains("unknown enum value 9"), "{}", rejected[0].reason);
        assert_eq!(state.read().policy_count(), 1);
        assert_eq!(state.read().rejected_policy_count(), 3, "recorded to fail closed");
        let mut bound = crate::state::testutil::workload("w", "10.0.0.1");
        bound.authorization_policies = vec!["ns/misnamed".into()];
        assert_eq!(
            state.read().policies_for(&bound).unavailable.len(),
            3,
            "unknown scope: ns-wide"
        );
        assert!(h.apply(vec![], vec!["ns/p".into(), "ns/misnamed".into()]).is_empty());
        assert_eq!(state.read().policy_count(), 0);
        assert_eq!(state.read().rejected_policy_count(), 2);
    }
}
