//! Per-type client state: the subscription, the versions accepted (for
//! resuming on a new stream), and turning each response into an ACK or NACK.

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node, Status};
use prost_types::Any;

use crate::WILDCARD;

/// gRPC INVALID_ARGUMENT, the code of a NACK's error detail.
const INVALID_ARGUMENT: i32 = 3;
/// At most this many rejection reasons are spelled out in one NACK.
const MAX_REASONS_IN_NACK: usize = 10;

/// One resource of a response, still encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub name: String,
    pub version: String,
    pub resource: Any,
}

/// A resource the handler refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub name: String,
    pub reason: String,
}

/// Receives the changes of one type. A response is applied as a unit:
/// everything not rejected takes effect together.
pub trait ResourceHandler: Send + 'static {
    fn apply(&mut self, updates: Vec<Update>, removals: Vec<String>) -> Vec<Rejection>;
}

/// What to subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    pub wildcard: bool,
    pub names: BTreeSet<String>,
}

impl Subscription {
    pub fn wildcard() -> Self {
        Self { wildcard: true, names: BTreeSet::new() }
    }

    /// On demand: nothing until names are subscribed.
    pub fn on_demand() -> Self {
        Self::default()
    }
}

/// The client's view of one type on the current and future streams.
#[derive(Debug, Clone)]
pub struct TypeState {
    type_url: String,
    subscription: Subscription,
    /// Versions of the resources accepted and held.
    versions: BTreeMap<String, String>,
    responses_applied: u64,
}

impl TypeState {
    pub fn new(type_url: impl Into<String>, subscription: Subscription) -> Self {
        Self {
            type_url: type_url.into(),
            subscription,
            versions: BTreeMap::new(),
            responses_applied: 0,
        }
    }

    pub fn type_url(&self) -> &str {
        &self.type_url
    }

    /// Names and versions currently held.
    pub fn versions(&self) -> &BTreeMap<String, String> {
        &self.versions
    }

    /// Whether at least one response was applied (on any stream).
    pub fn has_synced(&self) -> bool {
        self.responses_applied > 0
    }

    /// The first request of a stream: the whole subscription and what is
    /// already held, so the server can skip unchanged resources.
    pub fn initial_request(&self, node: Option<Node>) -> DeltaDiscoveryRequest {
        let mut subscribe: Vec<String> = self.subscription.names.iter().cloned().collect();
        let mut unsubscribe = Vec::new();
        if self.subscription.wildcard {
            subscribe.insert(0, WILDCARD.to_owned());
        } else {
            // Explicitly opt out of the legacy "empty means wildcard" rule.
            subscribe.insert(0, WILDCARD.to_owned());
            unsubscribe.push(WILDCARD.to_owned());
        }
        DeltaDiscoveryRequest {
            node,
            type_url: self.type_url.clone(),
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            initial_resource_versions: self.versions.clone().into_iter().collect(),
            response_nonce: String::new(),
            error_detail: None,
        }
    }

    /// Adds names to the subscription; returns the request to send, if any
    /// name is new.
    pub fn subscribe(
        &mut self,
        names: impl IntoIterator<Item = String>,
    ) -> Option<DeltaDiscoveryRequest> {
        let added: Vec<String> =
            names.into_iter().filter(|n| self.subscription.names.insert(n.clone())).collect();
        (!added.is_empty()).then(|| DeltaDiscoveryRequest {
            type_url: self.type_url.clone(),
            resource_names_subscribe: added,
            ..Default::default()
        })
    }

    /// Applies a response through `handler` and returns the ACK, or the NACK
    /// naming each rejected resource.
    pub fn on_response(
        &mut self,
        response: DeltaDiscoveryResponse,
        handler: &mut dyn ResourceHandler,
    ) -> DeltaDiscoveryRequest {
        let mut updates = Vec::with_capacity(response.resources.len());
        let mut rejections = Vec::new();
        for r in response.resources {
            match r.resource {
                Some(resource) if resource.type_url == self.type_url => {
                    updates.push(Update { name: r.name, version: r.version, resource });
                }
                Some(resource) => rejections.push(Rejection {
                    name: r.name,
                    reason: format!("type {} in a {} response", resource.type_url, self.type_url),
                }),
                None => rejections
                    .push(Rejection { name: r.name, reason: "resource has no body".to_owned() }),
            }
        }
        let versions: Vec<(String, String)> =
            updates.iter().map(|u| (u.name.clone(), u.version.clone())).collect();
        let removals = response.removed_resources;
        let refused = handler.apply(updates, removals.clone());
        for name in &removals {
            self.versions.remove(name);
        }
        for (name, version) in versions {
            if refused.iter().any(|r| r.name == name) {
                // Not held: let the next stream ask for it again.
                self.versions.remove(&name);
            } else {
                self.versions.insert(name, version);
            }
        }
        rejections.extend(refused);
        self.responses_applied += 1;
        let error_detail = (!rejections.is_empty()).then(|| Status {
            code: INVALID_ARGUMENT,
            message: nack_message(&rejections),
            details: vec![],
        });
        DeltaDiscoveryRequest {
            type_url: self.type_url.clone(),
            response_nonce: response.nonce,
            error_detail,
            ..Default::default()
        }
    }
}

fn nack_message(rejections: &[Rejection]) -> String {
    let mut parts: Vec<String> = rejections
        .iter()
        .take(MAX_REASONS_IN_NACK)
        .map(|r| format!("{}: {}", r.name, r.reason))
        .collect();
    if rejections.len() > MAX_REASONS_IN_NACK {
        parts.push(format!("and {} more", rejections.len() - MAX_REASONS_IN_NACK));
    }
    format!("rejected {} resource(s): {}", rejections.len(), parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::discovery::Resource;

    const T: &str = "type.googleapis.com/istio.workload.Address";

    /// Refuses resources whose body is "bad"; records what it was given.
    #[derive(Default)]
    struct Recorder {
        held: BTreeMap<String, Vec<u8>>,
    }

    impl ResourceHandler for Recorder {
        fn apply(&mut self, updates: Vec<Update>, removals: Vec<String>) -> Vec<Rejection> {
            let mut refused = Vec::new();
            for u in updates {
                if u.resource.value == b"bad" {
                    refused.push(Rejection { name: u.name, reason: "unparsable".to_owned() });
                } else {
                    self.held.insert(u.name, u.resource.value);
                }
            }
            for name in removals {
                self.held.remove(&name);
            }
            refused
        }
    }

    fn resource(name: &str, version: &str, body: &[u8]) -> Resource {
        Resource {
            name: name.to_owned(),
            version: version.to_owned(),
            resource: Some(Any { type_url: T.to_owned(), value: body.to_vec() }),
            ..Default::default()
        }
    }

    fn response(nonce: &str, resources: Vec<Resource>, removed: &[&str]) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: T.to_owned(),
            nonce: nonce.to_owned(),
            resources,
            removed_resources: removed.iter().map(|s| (*s).to_owned()).collect(),
            system_version_info: String::new(),
        }
    }

    #[test]
    fn acks_and_tracks_versions_for_resume() {
        let mut state = TypeState::new(T, Subscription::wildcard());
        let mut handler = Recorder::default();
        let reply = state.on_response(
            response("n1", vec![resource("a", "1", b"x"), resource("b", "1", b"y")], &[]),
            &mut handler,
        );
        assert_eq!(reply.response_nonce, "n1");
        assert_eq!(reply.error_detail, None);
        let reply =
            state.on_response(response("n2", vec![resource("a", "2", b"z")], &["b"]), &mut handler);
        assert_eq!(reply.error_detail, None);
        assert_eq!(state.versions(), &BTreeMap::from([("a".to_owned(), "2".to_owned())]));
        assert_eq!(handler.held.keys().collect::<Vec<_>>(), vec!["a"]);

        let initial = state.initial_request(None);
        assert_eq!(initial.resource_names_subscribe, vec!["*"]);
        assert!(initial.resource_names_unsubscribe.is_empty());
        assert_eq!(initial.initial_resource_versions.get("a").map(String::as_str), Some("2"));
    }

    #[test]
    fn nacks_with_reasons_and_keeps_the_good_ones() {
        let mut state = TypeState::new(T, Subscription::wildcard());
        let mut handler = Recorder::default();
        let bad_type = Resource {
            resource: Some(Any { type_url: "type.googleapis.com/other".into(), value: vec![] }),
            ..resource("c", "1", b"")
        };
        let empty = Resource { resource: None, ..resource("d", "1", b"") };
        let reply = state.on_response(
            response(
                "n1",
                vec![resource("a", "1", b"ok"), resource("b", "1", b"bad"), bad_type, empty],
                &[],
            ),
            &mut handler,
        );
        let detail = reply.error_detail.expect("a NACK");
        assert_eq!(detail.code, INVALID_ARGUMENT);
        assert!(detail.message.starts_with("rejected 3 resource(s)"), "{}", detail.message);
        assert!(detail.message.contains("b: unparsable"));
        assert!(detail.message.contains("d: resource has no body"));
        assert_eq!(
            state.versions().keys().collect::<Vec<_>>(),
            vec!["a"],
            "rejected ones are not held"
        );
        assert!(handler.held.contains_key("a"));
    }

    #[test]
    fn nack_message_is_bounded() {
        let many: Vec<Rejection> =
            (0..50).map(|i| Rejection { name: i.to_string(), reason: "x".into() }).collect();
        let message = nack_message(&many);
        assert!(message.ends_with("and 40 more"), "{message}");
    }

    #[test]
    fn on_demand_starts_empty_and_subscribes_new_names_once() {
        let mut state = TypeState::new(T, Subscription::on_demand());
        let initial = state.initial_request(None);
        assert_eq!(initial.resource_names_subscribe, vec!["*"]);
        assert_eq!(initial.resource_names_unsubscribe, vec!["*"]);
        let req = state.subscribe(["net/10.0.0.1".to_owned()]).unwrap();
        assert_eq!(req.resource_names_subscribe, vec!["net/10.0.0.1"]);
        assert_eq!(state.subscribe(["net/10.0.0.1".to_owned()]), None);
        assert_eq!(state.initial_request(None).resource_names_subscribe, vec!["*", "net/10.0.0.1"]);
    }
}
