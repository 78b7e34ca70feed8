//! Per-connection delta xDS state on the server.
//!
//! The protocol, per type URL, as proxies (ztunnel, our waypoint) use it:
//! 1. The first request subscribes (`*` for wildcard, or names), may carry
//!    `initial_resource_versions` (what the proxy already holds from an
//!    earlier stream) and has no nonce.
//! 2. Every response carries a fresh nonce; the proxy answers it with an ACK
//!    (same nonce, no error) or a NACK (same nonce, `error_detail`).
//! 3. Later requests without a nonce change the subscription.
//!
//! The session answers with only what changed for this proxy: resources whose
//! version differs from what it last sent (or the proxy said it holds), and
//! removals of resources it sent that are gone or no longer subscribed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mesh_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node, Resource};
use prost_types::Any;

use crate::WILDCARD;

/// Unacknowledged responses remembered per type; an ACK for an older one is
/// then reported as unknown rather than kept forever.
const MAX_OUTSTANDING_NONCES: usize = 16;

/// Most resource names one stream may subscribe to (or report held) per
/// type. Per-stream state grows with them, and a proxy needs far fewer:
/// ztunnel subscribes by wildcard and adds on-demand names one lookup at a
/// time. A stream over the limit is ended with `RESOURCE_EXHAUSTED`.
pub const MAX_SUBSCRIBED_NAMES: usize = 10_000;

/// A resource as istiod holds it: a content version and the encoded value.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedResource {
    pub version: String,
    pub resource: Any,
    /// Other names the proxy may subscribe to this resource by
    /// (`<network>/<ip>` for workloads and services).
    pub aliases: Vec<String>,
}

/// What one proxy may see of one type, by resource name.
pub type ResourceView = BTreeMap<String, VersionedResource>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("request without a type URL")]
    NoTypeUrl,
    #[error("{type_url}: nonce {nonce:?} was never sent")]
    UnknownNonce { type_url: String, nonce: String },
    #[error("{type_url}: more than {limit} resource names subscribed or held")]
    TooManyNames { type_url: String, limit: usize },
}

/// How a request changed the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The subscription changed (or was created): compute a response.
    SubscriptionChanged,
    /// The last response was accepted.
    Ack,
    /// The last response was rejected; already recorded.
    Nack { message: String },
    /// An ACK or NACK of an older response, superseded by a newer one.
    Stale,
}

/// Per-type state, public for debug endpoints (`/debug/syncz`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeStatus {
    pub wildcard: bool,
    pub names: BTreeSet<String>,
    /// name -> version last sent (or reported held by the proxy).
    pub sent: BTreeMap<String, String>,
    /// The nonce of the newest response, until ACKed or NACKed.
    pub pending_nonce: Option<String>,
    /// Nonce of the newest ACKed response.
    pub acked_nonce: Option<String>,
    /// The newest NACK: nonce and message.
    pub last_nack: Option<(String, String)>,
    /// The subscription changed since the last response: answer even if
    /// nothing is to be sent, so the proxy knows it is in sync.
    pub answer_due: bool,
}

impl TypeStatus {
    fn subscribes(&self, name: &str, aliases: &[String]) -> bool {
        self.wildcard || self.names.contains(name) || aliases.iter().any(|a| self.names.contains(a))
    }
}

/// One proxy connection.
#[derive(Debug)]
pub struct Session {
    node: Option<Node>,
    types: HashMap<String, TypeStatus>,
    nonce_counter: u64,
    /// Nonces sent and not yet superseded, by type.
    outstanding: HashMap<String, Vec<String>>,
    /// Names per type beyond which a request is refused.
    max_names: usize,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    pub fn new() -> Self {
        Self::with_name_limit(MAX_SUBSCRIBED_NAMES)
    }

    /// A session refusing more than `max_names` names per type.
    pub fn with_name_limit(max_names: usize) -> Self {
        Self {
            node: None,
            types: HashMap::new(),
            nonce_counter: 0,
            outstanding: HashMap::new(),
            max_names,
        }
    }

    /// The node as announced in the first request that carried one.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    pub fn status(&self, type_url: &str) -> Option<&TypeStatus> {
        self.types.get(type_url)
    }

    pub fn type_urls(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Records a request from the proxy.
    pub fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
    ) -> Result<RequestOutcome, SessionError> {
        if self.node.is_none() {
            self.node = request.node;
        }
        if request.type_url.is_empty() {
            return Err(SessionError::NoTypeUrl);
        }
        let type_url = request.type_url;
        let first = !self.types.contains_key(&type_url);
        let status = self.types.entry(type_url.clone()).or_default();

        if !request.response_nonce.is_empty() {
            let nonce = request.response_nonce;
            let known = self.outstanding.get(&type_url).is_some_and(|n| n.contains(&nonce));
            if !known {
                return Err(SessionError::UnknownNonce { type_url, nonce });
            }
            let latest = status.pending_nonce.as_deref() == Some(nonce.as_str());
            let outcome = match request.error_detail {
                Some(error) => {
                    status.last_nack = Some((nonce.clone(), error.message.clone()));
                    if latest {
                        status.pending_nonce = None;
                    }
                    RequestOutcome::Nack { message: error.message }
                }
                None if latest => {
                    status.pending_nonce = None;
                    status.acked_nonce = Some(nonce.clone());
                    RequestOutcome::Ack
                }
                None => RequestOutcome::Stale,
            };
            if latest {
                self.outstanding.remove(&type_url);
            }
            // A request carrying a nonce may also change the subscription.
            let changed = apply_subscription(
                status,
                &request.resource_names_subscribe,
                &request.resource_names_unsubscribe,
            );
            status.answer_due |= changed;
            check_names(status, &type_url, self.max_names)?;
            return Ok(if changed { RequestOutcome::SubscriptionChanged } else { outcome });
        }

        if first {
            if request.initial_resource_versions.len() > self.max_names {
                return Err(SessionError::TooManyNames { type_url, limit: self.max_names });
            }
            // What the proxy holds from an earlier stream counts as sent, so
            // unchanged resources are not resent after a reconnect.
            status.sent.extend(request.initial_resource_versions);
            // Legacy form: a first request naming nothing is a wildcard.
            if request.resource_names_subscribe.is_empty()
                && request.resource_names_unsubscribe.is_empty()
            {
                status.wildcard = true;
            }
            status.answer_due = true;
        }
        status.answer_due |= apply_subscription(
            status,
            &request.resource_names_subscribe,
            &request.resource_names_unsubscribe,
        );
        check_names(status, &type_url, self.max_names)?;
        Ok(RequestOutcome::SubscriptionChanged)
    }

    /// Builds the response bringing the proxy from what it was sent to `view`,
    /// or `None` when nothing changed. Consider only `changed` names when
    /// given (incremental push), else the whole view and everything sent.
    pub fn respond(
        &mut self,
        type_url: &str,
        view: &ResourceView,
        changed: Option<&BTreeSet<String>>,
    ) -> Option<DeltaDiscoveryResponse> {
        let status = self.types.get_mut(type_url)?;
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        let candidates: Box<dyn Iterator<Item = &String>> = match changed {
            Some(names) => Box::new(names.iter()),
            None => {
                Box::new(view.keys().chain(status.sent.keys()).collect::<BTreeSet<_>>().into_iter())
            }
        };
        let mut visited = BTreeSet::new();
        for name in candidates {
            if !visited.insert(name.clone()) {
                continue;
            }
            match view.get(name).filter(|r| status.subscribes(name, &r.aliases)) {
                Some(r) if status.sent.get(name) != Some(&r.version) => resources.push(Resource {
                    name: name.clone(),
                    aliases: r.aliases.clone(),
                    version: r.version.clone(),
                    resource: Some(r.resource.clone()),
                    ttl: None,
                    cache_control: None,
                }),
                Some(_) => {}
                None if status.sent.contains_key(name) => removed.push(name.clone()),
                None => {}
            }
        }
        // Explicitly subscribed names that do not exist are reported removed
        // once, so an on-demand lookup gets a definite answer.
        if changed.is_none() {
            for name in &status.names {
                if name != WILDCARD && !view.contains_key(name) && !status.sent.contains_key(name) {
                    let aliased = view.values().any(|r| r.aliases.contains(name));
                    if !aliased && !removed.contains(name) {
                        removed.push(name.clone());
                    }
                }
            }
        }
        if resources.is_empty() && removed.is_empty() && !status.answer_due {
            return None;
        }
        status.answer_due = false;
        for r in &resources {
            status.sent.insert(r.name.clone(), r.version.clone());
        }
        for name in &removed {
            status.sent.remove(name);
        }
        self.nonce_counter += 1;
        let nonce = format!("{:x}", self.nonce_counter);
        status.pending_nonce = Some(nonce.clone());
        let outstanding = self.outstanding.entry(type_url.to_owned()).or_default();
        if outstanding.len() >= MAX_OUTSTANDING_NONCES {
            outstanding.remove(0);
        }
        outstanding.push(nonce.clone());
        Some(DeltaDiscoveryResponse {
            system_version_info: String::new(),
            resources,
            type_url: type_url.to_owned(),
            removed_resources: removed,
            nonce,
        })
    }
}

/// Refuses a subscription naming more than `limit` names.
fn check_names(status: &TypeStatus, type_url: &str, limit: usize) -> Result<(), SessionError> {
    if status.names.len() > limit {
        return Err(SessionError::TooManyNames { type_url: type_url.to_owned(), limit });
    }
    Ok(())
}

/// Applies subscribe/unsubscribe lists; returns whether anything changed.
fn apply_subscription(
    status: &mut TypeStatus,
    subscribe: &[String],
    unsubscribe: &[String],
) -> bool {
    let mut changed = false;
    for name in subscribe {
        if name == WILDCARD {
            changed |= !status.wildcard;
            status.wildcard = true;
        } else {
            changed |= status.names.insert(name.clone());
        }
    }
    for name in unsubscribe {
        if name == WILDCARD {
            changed |= status.wildcard;
            status.wildcard = false;
        } else if status.names.remove(name) {
            changed = true;
            // The proxy drops what it unsubscribed; forget we sent it.
            if !status.wildcard {
                status.sent.remove(name);
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests;
