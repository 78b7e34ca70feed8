//! SPIFFE checks on a leaf certificate, shared by both ends of a handshake
//! and by the certificate manager when it admits a freshly signed leaf.
//!
//! BoringSSL verifies the chain (signatures, validity period, issuer CA
//! flags); these checks add what X.509 path validation does not: exactly one
//! SAN, a URI that is a well-formed Istio SPIFFE ID, and a leaf that is not
//! itself a CA.

use mesh_model::Identity;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::PeerError;

/// What the SPIFFE checks learn about a valid leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    pub identity: Identity,
    /// Validity period, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

/// Checks a leaf certificate (DER) against the SPIFFE rules above and returns
/// its identity and validity period.
pub fn inspect_leaf(der: &[u8]) -> Result<LeafInfo, PeerError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PeerError::Malformed(e.to_string()))?;
    let mut sans = Vec::new();
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => sans.extend(san.general_names.iter()),
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(PeerError::LeafIsCa),
            _ => {}
        }
    }
    let identity = match sans.as_slice() {
        [GeneralName::URI(uri)] => uri.parse::<Identity>()?,
        [_] => return Err(PeerError::SanNotUri),
        other => return Err(PeerError::SanCount(other.len())),
    };
    let validity = cert.validity();
    Ok(LeafInfo {
        identity,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// The workload identity of a leaf certificate (DER); see [`inspect_leaf`].
pub fn leaf_identity(der: &[u8]) -> Result<Identity, PeerError> {
    inspect_leaf(der).map(|info| info.identity)
}

/// Which peer identities a handshake accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerPolicy {
    /// Any identity in one of these trust domains (a server accepting clients;
    /// authorization decides later).
    TrustDomains(Vec<String>),
    /// Exactly one of these identities (a client dialling a destination the
    /// control plane said may present them).
    Identities(Vec<Identity>),
}

impl PeerPolicy {
    pub fn check(&self, peer: &Identity) -> Result<(), PeerError> {
        match self {
            Self::TrustDomains(domains) => {
                if domains.iter().any(|d| d == peer.trust_domain()) {
                    Ok(())
                } else {
                    Err(PeerError::TrustDomain(peer.trust_domain().to_owned()))
                }
            }
            Self::Identities(allowed) => {
                if allowed.contains(peer) {
                    Ok(())
                } else {
                    let expected =
                        allowed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                    Err(PeerError::UnexpectedIdentity { found: Box::new(peer.clone()), expected })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(matches!(leaf_identity(b"not a certificate"), Err(PeerError::Malformed(_))));
        assert!(matches!(leaf_identity(&[]), Err(PeerError::Malformed(_))));
        assert!(matches!(leaf_identity(&[0x30, 0x82, 0xff, 0xff]), Err(PeerError::Malformed(_))));
    }

    #[test]
    fn policy_checks_trust_domain_or_identity() {
        let id = Identity::new("cluster.local", "ns", "sa").unwrap();
        assert!(PeerPolicy::TrustDomains(vec!["cluster.local".into()]).check(&id).is_ok());
        assert_eq!(
            PeerPolicy::TrustDomains(vec!["other.org".into()]).check(&id),
            Err(PeerError::TrustDomain("cluster.local".into()))
        );
        assert!(PeerPolicy::Identities(vec![id.clone()]).check(&id).is_ok());
        let other = Identity::new("cluster.local", "ns", "other").unwrap();
        assert!(matches!(
            PeerPolicy::Identities(vec![other]).check(&id),
            Err(PeerError::UnexpectedIdentity { .. })
        ));
        assert!(PeerPolicy::Identities(vec![]).check(&id).is_err(), "an empty set accepts nobody");
    }
}
