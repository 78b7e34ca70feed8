//! Status conditions produced while translating: what was rejected or only
//! partly honoured, per object, to be written back by a status writer.

/// Reason for a field ztunnel cannot enforce (L7 parts, AUDIT/CUSTOM, ...).
pub const REASON_UNSUPPORTED_VALUE: &str = "UnsupportedValue";
/// Reason for a value that is malformed (bad CIDR, bad port, ...).
pub const REASON_INVALID: &str = "InvalidValue";
/// Condition type used for every translation problem (as upstream's
/// `ZtunnelAccepted`-style conditions, but one type for all kinds).
pub const CONDITION_ACCEPTED: &str = "Accepted";

/// One status condition, in Kubernetes' shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: String,
    /// `"True"` (accepted, possibly with a warning) or `"False"` (rejected).
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl Condition {
    /// The object was translated, but part of it was dropped or changed.
    pub fn accepted_with_warning(reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: CONDITION_ACCEPTED.to_owned(),
            status: "True".to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// The object produced nothing.
    pub fn rejected(reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: CONDITION_ACCEPTED.to_owned(),
            status: "False".to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// The conditions for one object, identified by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStatus {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub conditions: Vec<Condition>,
}

impl ObjectStatus {
    pub fn new(kind: &str, namespace: &str, name: &str, conditions: Vec<Condition>) -> Self {
        Self {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            conditions,
        }
    }
}
