//! Workload identity: an Istio-shaped SPIFFE ID,
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Parsing follows the SPIFFE ID specification (lower-case scheme and trust
//! domain, non-empty path segments of `[A-Za-z0-9._-]`, no `.`/`..`
//! segments, no query or fragment, at most 2048 bytes) and then requires
//! Istio's path shape.

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";
const MAX_LEN: usize = 2048;
const MAX_TRUST_DOMAIN_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("SPIFFE ID is empty")]
    Empty,
    #[error("SPIFFE ID is {0} bytes, over the 2048-byte limit")]
    TooLong(usize),
    #[error("SPIFFE ID must start with \"spiffe://\"")]
    Scheme,
    #[error("SPIFFE ID trust domain is empty")]
    EmptyTrustDomain,
    #[error("SPIFFE ID trust domain is longer than 255 bytes")]
    TrustDomainTooLong,
    #[error("SPIFFE ID trust domain has invalid character {0:?} (allowed: a-z 0-9 . - _)")]
    TrustDomainChar(char),
    #[error("SPIFFE ID path has an empty segment")]
    EmptySegment,
    #[error("SPIFFE ID path has a dot segment")]
    DotSegment,
    #[error("SPIFFE ID path has invalid character {0:?} (allowed: A-Z a-z 0-9 . - _)")]
    PathChar(char),
    #[error("SPIFFE ID path must be /ns/<namespace>/sa/<service-account>")]
    NotIstioPath,
}

/// A validated Istio workload identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl Identity {
    /// Builds an identity from its parts, validating each.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let id = Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        validate_trust_domain(&id.trust_domain)?;
        validate_segment(&id.namespace)?;
        validate_segment(&id.service_account)?;
        let len = id.to_string().len();
        if len > MAX_LEN {
            return Err(IdentityError::TooLong(len));
        }
        Ok(id)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdentityError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(IdentityError::TooLong(s.len()));
        }
        let rest = s.strip_prefix(SCHEME).ok_or(IdentityError::Scheme)?;
        let (trust_domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        validate_trust_domain(trust_domain)?;
        let segments: Vec<&str> = path.split('/').collect();
        for segment in &segments {
            validate_segment(segment)?;
        }
        match segments.as_slice() {
            ["ns", namespace, "sa", service_account] => Ok(Self {
                trust_domain: trust_domain.to_owned(),
                namespace: (*namespace).to_owned(),
                service_account: (*service_account).to_owned(),
            }),
            _ => Err(IdentityError::NotIstioPath),
        }
    }
}

fn validate_trust_domain(td: &str) -> Result<(), IdentityError> {
    if td.is_empty() {
        return Err(IdentityError::EmptyTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdentityError::TrustDomainTooLong);
    }
    match td.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')) {
        Some(c) => Err(IdentityError::TrustDomainChar(c)),
        None => Ok(()),
    }
}

fn validate_segment(segment: &str) -> Result<(), IdentityError> {
    if segment.is_empty() {
        return Err(IdentityError::EmptySegment);
    }
    if segment == "." || segment == ".." {
        return Err(IdentityError::DotSegment);
    }
    match segment.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) {
        Some(c) => Err(IdentityError::PathChar(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_an_istio_identity() {
        let id: Identity = "spiffe://cluster.local/ns/bookinfo/sa/reviews".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "bookinfo");
        assert_eq!(id.service_account(), "reviews");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/bookinfo/sa/reviews");
        assert_eq!(Identity::new("cluster.local", "bookinfo", "reviews").unwrap(), id);
    }

    #[test]
    fn rejects_malformed_ids_with_a_reason() {
        let cases: &[(&str, IdentityError)] = &[
            ("", IdentityError::Empty),
            ("http://cluster.local/ns/a/sa/b", IdentityError::Scheme),
            ("SPIFFE://cluster.local/ns/a/sa/b", IdentityError::Scheme),
            ("spiffe:///ns/a/sa/b", IdentityError::EmptyTrustDomain),
            ("spiffe://Cluster.local/ns/a/sa/b", IdentityError::TrustDomainChar('C')),
            ("spiffe://td:8080/ns/a/sa/b", IdentityError::TrustDomainChar(':')),
            ("spiffe://td/ns//sa/b", IdentityError::EmptySegment),
            ("spiffe://td/ns/a/sa/b/", IdentityError::EmptySegment),
            ("spiffe://td/ns/../sa/b", IdentityError::DotSegment),
            ("spiffe://td/ns/a/sa/b?x=1", IdentityError::PathChar('?')),
            ("spiffe://td/ns/a/sa/b#frag", IdentityError::PathChar('#')),
            ("spiffe://td/ns/a/sa/ü", IdentityError::PathChar('ü')),
            ("spiffe://td", IdentityError::EmptySegment),
            ("spiffe://td/ns/a", IdentityError::NotIstioPath),
            ("spiffe://td/sa/b/ns/a", IdentityError::NotIstioPath),
            ("spiffe://td/ns/a/sa/b/extra", IdentityError::NotIstioPath),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Identity>().as_ref(), Err(want), "input {input:?}");
        }
    }

    #[test]
    fn rejects_overlong_ids() {
        let long = format!("spiffe://td/ns/{}/sa/b", "a".repeat(MAX_LEN));
        assert_eq!(long.parse::<Identity>(), Err(IdentityError::TooLong(long.len())));
        let long_td = "a".repeat(MAX_TRUST_DOMAIN_LEN + 1);
        assert_eq!(Identity::new(long_td, "a", "b"), Err(IdentityError::TrustDomainTooLong));
        assert_eq!(Identity::new("td", "a", "b/c"), Err(IdentityError::PathChar('/')));
    }
}
