//! Why a certificate request was refused: one low-cardinality reason per
//! case, mapped to a gRPC code and used as the refusal metric's label.

use std::fmt;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use tonic::{Code, Status};

/// Every way `CreateCertificate` can say no. The set is closed so the metric
/// label stays low-cardinality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalReason {
    /// No `authorization: Bearer …` metadata.
    MissingToken,
    /// The token is malformed, expired, for another audience, or not a
    /// service account's.
    InvalidToken,
    /// The token could not be checked (TokenReview call failed).
    AuthenticatorUnavailable,
    /// The CSR names a valid identity the caller may not have.
    IdentityMismatch,
    /// The caller asked to impersonate but is not a trusted node agent.
    NotTrustedNodeAgent,
    /// The caller's node cannot be established (no node or pod binding in
    /// the token, pod gone, pod UID or service account changed).
    CallerNodeUnknown,
    /// No pod with the impersonated identity runs on the caller's node.
    WorkloadNotOnNode,
    /// `ImpersonatedIdentity` is not a SPIFFE ID of this trust domain.
    BadImpersonatedIdentity,
    /// The pod lookup behind an impersonation check failed.
    AuthorizerUnavailable,
    /// The CSR is larger than the configured limit.
    CsrTooLarge,
    /// The CSR is not a parsable PEM PKCS#10 request.
    CsrUnparsable,
    /// The CSR's self-signature does not verify.
    CsrBadSignature,
    /// The CSR's key is neither EC P-256 nor RSA of 2048 to 8192 bits.
    CsrBadKey,
    /// The CSR carries no SAN or several.
    CsrSanCount,
    /// The CSR's SAN is not a SPIFFE URI of this trust domain.
    CsrBadSan,
    /// The CSR asks for a CA certificate (basicConstraints CA:TRUE).
    CsrCaRequested,
    /// `validity_duration` is negative.
    InvalidTtl,
    /// Signing failed on our side.
    SigningFailed,
}

impl RefusalReason {
    /// All reasons, for tests and dashboards.
    pub const ALL: [Self; 18] = [
        Self::MissingToken,
        Self::InvalidToken,
        Self::AuthenticatorUnavailable,
        Self::IdentityMismatch,
        Self::NotTrustedNodeAgent,
        Self::CallerNodeUnknown,
        Self::WorkloadNotOnNode,
        Self::BadImpersonatedIdentity,
        Self::AuthorizerUnavailable,
        Self::CsrTooLarge,
        Self::CsrUnparsable,
        Self::CsrBadSignature,
        Self::CsrBadKey,
        Self::CsrSanCount,
        Self::CsrBadSan,
        Self::CsrCaRequested,
        Self::InvalidTtl,
        Self::SigningFailed,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::AuthenticatorUnavailable => "authenticator_unavailable",
            Self::IdentityMismatch => "identity_mismatch",
            Self::NotTrustedNodeAgent => "not_trusted_node_agent",
            Self::CallerNodeUnknown => "caller_node_unknown",
            Self::WorkloadNotOnNode => "workload_not_on_node",
            Self::BadImpersonatedIdentity => "bad_impersonated_identity",
            Self::AuthorizerUnavailable => "authorizer_unavailable",
            Self::CsrTooLarge => "csr_too_large",
            Self::CsrUnparsable => "csr_unparsable",
            Self::CsrBadSignature => "csr_bad_signature",
            Self::CsrBadKey => "csr_bad_key",
            Self::CsrSanCount => "csr_san_count",
            Self::CsrBadSan => "csr_bad_san",
            Self::CsrCaRequested => "csr_ca_requested",
            Self::InvalidTtl => "invalid_ttl",
            Self::SigningFailed => "signing_failed",
        }
    }

    /// The gRPC code the caller sees.
    pub fn code(self) -> Code {
        match self {
            Self::MissingToken | Self::InvalidToken => Code::Unauthenticated,
            Self::AuthenticatorUnavailable | Self::AuthorizerUnavailable => Code::Unavailable,
            Self::IdentityMismatch
            | Self::NotTrustedNodeAgent
            | Self::CallerNodeUnknown
            | Self::WorkloadNotOnNode => Code::PermissionDenied,
            Self::CsrTooLarge => Code::ResourceExhausted,
            Self::BadImpersonatedIdentity
            | Self::CsrUnparsable
            | Self::CsrBadSignature
            | Self::CsrBadKey
            | Self::CsrSanCount
            | Self::CsrBadSan
            | Self::CsrCaRequested
            | Self::InvalidTtl => Code::InvalidArgument,
            Self::SigningFailed => Code::Internal,
        }
    }

    /// The message the caller sees. Deliberately generic for authentication
    /// and authorization: the details go to the log, not to the caller.
    fn public_message(self) -> &'static str {
        match self {
            Self::MissingToken => "missing bearer token",
            Self::InvalidToken => "authentication failed",
            Self::AuthenticatorUnavailable | Self::AuthorizerUnavailable => {
                "authorization backend unavailable, retry later"
            }
            Self::IdentityMismatch
            | Self::NotTrustedNodeAgent
            | Self::CallerNodeUnknown
            | Self::WorkloadNotOnNode => "not authorized for the requested identity",
            Self::BadImpersonatedIdentity => "ImpersonatedIdentity is not a valid SPIFFE ID",
            Self::CsrTooLarge => "certificate signing request too large",
            Self::CsrUnparsable => "certificate signing request is not valid PEM PKCS#10",
            Self::CsrBadSignature => "certificate signing request signature does not verify",
            Self::CsrBadKey => "key must be ECDSA P-256 or RSA 2048-8192",
            Self::CsrSanCount => "certificate signing request must carry exactly one SAN",
            Self::CsrBadSan => "SAN must be a SPIFFE URI of this trust domain",
            Self::CsrCaRequested => "CA certificates are not issued",
            Self::InvalidTtl => "validity_duration must not be negative",
            Self::SigningFailed => "signing failed",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for RefusalReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

/// A refused request: the reason, and details for the log only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate request refused ({reason}): {detail}")]
pub struct Refusal {
    reason: RefusalReason,
    detail: String,
}

impl Refusal {
    pub fn new(reason: RefusalReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }

    pub fn reason(&self) -> RefusalReason {
        self.reason
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The status returned to the caller (code and generic message).
    pub fn to_status(&self) -> Status {
        Status::new(self.reason.code(), self.reason.public_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_distinct_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for reason in RefusalReason::ALL {
            let label = reason.as_str();
            assert!(label.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{label}");
            assert!(seen.insert(label), "duplicate label {label}");
            assert_ne!(reason.code(), Code::Ok);
        }
    }

    #[test]
    fn status_hides_details() {
        let refusal = Refusal::new(RefusalReason::WorkloadNotOnNode, "secret-ns/db on node-7");
        let status = refusal.to_status();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(!status.message().contains("node-7"));
    }
}
