//! Config sources: where the objects istiod translates come from.
//!
//! Every source (Kubernetes watchers in [`kube`], a local directory of YAML
//! in [`local`]) reports the same [`SourceEvent`]s on one channel: an object
//! applied (created or changed), an object deleted, and once, when its
//! initial listing is complete, [`SourceEvent::Synced`]. The translation
//! engine consumes them and never knows which source it runs on.

pub mod kube;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::translate::ObjectKey;
use crate::translate::crd::{AuthorizationPolicy, PeerAuthentication, ServiceEntry, WorkloadEntry};

pub mod local;

/// The kinds istiod reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    Service,
    EndpointSlice,
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
    ServiceEntry,
    WorkloadEntry,
    Gateway,
    GatewayClass,
    HttpRoute,
    GrpcRoute,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::Gateway,
        Kind::GatewayClass,
        Kind::HttpRoute,
        Kind::GrpcRoute,
    ];

    /// The `kind` field of the object.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Gateway => "Gateway",
            Kind::GatewayClass => "GatewayClass",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
        }
    }

    /// API group (empty for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Node | Kind::Pod | Kind::Service => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::AuthorizationPolicy | Kind::PeerAuthentication | Kind::RequestAuthentication => {
                "security.istio.io"
            }
            Kind::ServiceEntry | Kind::WorkloadEntry => "networking.istio.io",
            Kind::Gateway | Kind::GatewayClass | Kind::HttpRoute | Kind::GrpcRoute => {
                "gateway.networking.k8s.io"
            }
        }
    }

    /// The version istiod watches (the storage version of our CRDs).
    pub fn version(self) -> &'static str {
        "v1"
    }

    /// Lower-case plural, as in the API path.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Node => "nodes",
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::AuthorizationPolicy => "authorizationpolicies",
            Kind::PeerAuthentication => "peerauthentications",
            Kind::RequestAuthentication => "requestauthentications",
            Kind::ServiceEntry => "serviceentries",
            Kind::WorkloadEntry => "workloadentries",
            Kind::Gateway => "gateways",
            Kind::GatewayClass => "gatewayclasses",
            Kind::HttpRoute => "httproutes",
            Kind::GrpcRoute => "grpcroutes",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node | Kind::GatewayClass)
    }

    /// The kind with this `kind` field, under any version of its group.
    pub fn from_api(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        Kind::ALL.into_iter().find(|k| k.name() == kind && k.group() == group)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An object of a kind istiod stores but does not translate for ztunnel
/// (request authentication and the Gateway API kinds, for waypoints and
/// status): metadata plus the whole object as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct UntypedObject {
    pub kind: Kind,
    pub metadata: ObjectMeta,
    pub body: serde_json::Value,
}

/// One object from a source.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "objects travel one at a time and are stored by value; boxing the big ones would touch every consumer"
)]
pub enum Object {
    Namespace(Namespace),
    Node(Node),
    Pod(Pod),
    Service(Service),
    EndpointSlice(EndpointSlice),
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
    ServiceEntry(ServiceEntry),
    WorkloadEntry(WorkloadEntry),
    Untyped(UntypedObject),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::ServiceEntry(_) => Kind::ServiceEntry,
            Object::WorkloadEntry(_) => Kind::WorkloadEntry,
            Object::Untyped(u) => u.kind,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::ServiceEntry(o) => &o.metadata,
            Object::WorkloadEntry(o) => &o.metadata,
            Object::Untyped(u) => &u.metadata,
        }
    }

    /// Kind, namespace and name.
    pub fn reference(&self) -> ObjectRef {
        let meta = self.metadata();
        ObjectRef {
            kind: self.kind(),
            key: ObjectKey::new(
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default(),
            ),
        }
    }
}

/// Which object: kind plus namespace (empty for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: Kind,
    pub key: ObjectKey,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.key.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.key.namespace, self.key.name)
        }
    }
}

/// What a source reports.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant, reason = "see `Object`")]
pub enum SourceEvent {
    /// Created or changed (the whole new object).
    Applied(Object),
    /// Gone.
    Deleted(ObjectRef),
    /// The source has reported every object that existed when it started;
    /// istiod serves proxies only after this, so nobody gets a partial view.
    Synced,
}

/// Where a source sends its events.
pub type EventSender = tokio::sync::mpsc::Sender<SourceEvent>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_by_api_version_and_kind() {
        assert_eq!(Kind::from_api("v1", "Pod"), Some(Kind::Pod));
        assert_eq!(
            Kind::from_api("security.istio.io/v1beta1", "AuthorizationPolicy"),
            Some(Kind::AuthorizationPolicy)
        );
        assert_eq!(
            Kind::from_api("gateway.networking.k8s.io/v1", "HTTPRoute"),
            Some(Kind::HttpRoute)
        );
        assert_eq!(Kind::from_api("apps/v1", "Pod"), None);
        assert_eq!(Kind::from_api("v1", "Deployment"), None);
        for kind in Kind::ALL {
            let api = if kind.group().is_empty() {
                kind.version().to_owned()
            } else {
                format!("{}/{}", kind.group(), kind.version())
            };
            assert_eq!(Kind::from_api(&api, kind.name()), Some(kind));
        }
    }

    #[test]
    fn references_print_kind_namespace_and_name() {
        let r = ObjectRef { kind: Kind::Pod, key: ObjectKey::new("ns", "a") };
        assert_eq!(r.to_string(), "Pod ns/a");
        let r = ObjectRef { kind: Kind::Node, key: ObjectKey::new("", "n1") };
        assert_eq!(r.to_string(), "Node n1");
    }
}
