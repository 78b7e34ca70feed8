//! A workload's certificate and the roots it trusts.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boring::pkey::{PKey, Private};
use boring::stack::{Stack, StackRef};
use boring::x509::store::{X509Store, X509StoreBuilder};
use boring::x509::{X509, X509Ref, X509StoreContext};
use mesh_model::Identity;

use crate::verify::inspect_leaf;
use crate::{CertificateError, PeerError};

/// Roots that peers' chains must lead to. Holding several lets a new root be
/// rolled out while the old one is still trusted.
pub struct TrustBundle {
    roots: Vec<X509>,
    store: X509Store,
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subjects: Vec<String> =
            self.roots.iter().map(|r| format!("{:?}", r.subject_name())).collect();
        f.debug_struct("TrustBundle").field("roots", &subjects).finish()
    }
}

impl TrustBundle {
    pub fn new(roots: Vec<X509>) -> Result<Self, CertificateError> {
        if roots.is_empty() {
            return Err(CertificateError::Empty("trust bundle"));
        }
        let mut builder = X509StoreBuilder::new()?;
        for root in &roots {
            builder.add_cert(root.clone())?;
        }
        Ok(Self { roots, store: builder.build() })
    }

    /// Parses one or more PEM certificates.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CertificateError> {
        let roots = X509::stack_from_pem(pem)
            .map_err(|source| CertificateError::Parse { what: "trust bundle PEM", source })?;
        Self::new(roots)
    }

    pub fn roots(&self) -> &[X509] {
        &self.roots
    }

    pub fn to_pem(&self) -> Result<String, CertificateError> {
        let mut out = String::new();
        for root in &self.roots {
            out.push_str(&String::from_utf8_lossy(&root.to_pem()?));
        }
        Ok(out)
    }

    /// Verifies `leaf` (with untrusted intermediates) up to one of the roots:
    /// signatures, validity periods and CA constraints, at the current time.
    pub fn verify_chain(
        &self,
        leaf: &X509Ref,
        intermediates: &StackRef<X509>,
    ) -> Result<(), PeerError> {
        let mut ctx = X509StoreContext::new().map_err(|e| PeerError::Chain(e.to_string()))?;
        let outcome = ctx.init(&self.store, leaf, intermediates, |c| {
            let ok = c.verify_cert()?;
            let reason = match c.verify_result() {
                Ok(()) => "verification failed".to_owned(),
                Err(e) => format!("{} (at depth {})", e.error_string(), c.error_depth()),
            };
            Ok((ok, reason))
        });
        match outcome {
            Ok((true, _)) => Ok(()),
            Ok((false, reason)) => Err(PeerError::Chain(reason)),
            Err(e) => Err(PeerError::Chain(e.to_string())),
        }
    }
}

/// A signed leaf for one identity, its intermediates, its key and the roots
/// that came with it.
pub struct WorkloadCertificate {
    identity: Identity,
    leaf: X509,
    intermediates: Vec<X509>,
    key: PKey<Private>,
    roots: TrustBundle,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity.to_string())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("intermediates", &self.intermediates.len())
            .finish_non_exhaustive()
    }
}

impl WorkloadCertificate {
    /// Builds from a CA response: `chain` is PEM, leaf first and root last
    /// (what `CreateCertificate` returns; each entry may hold several PEM
    /// blocks). The leaf must name `expected`, match `key`, pass the SPIFFE
    /// checks and verify up to the root.
    pub fn from_chain_pem(
        expected: &Identity,
        key: PKey<Private>,
        chain: &[String],
    ) -> Result<Self, CertificateError> {
        let mut certs = Vec::new();
        for pem in chain {
            let parsed = X509::stack_from_pem(pem.as_bytes()).map_err(|source| {
                CertificateError::Parse { what: "certificate chain PEM", source }
            })?;
            certs.extend(parsed);
        }
        let mut certs = certs.into_iter();
        let leaf = certs.next().ok_or(CertificateError::Empty("certificate chain"))?;
        let mut rest: Vec<X509> = certs.collect();
        let root = rest.pop().ok_or(CertificateError::Empty("root certificate in the chain"))?;
        Self::new(expected, key, leaf, rest, TrustBundle::new(vec![root])?)
    }

    /// Builds from parts; see [`WorkloadCertificate::from_chain_pem`].
    pub fn new(
        expected: &Identity,
        key: PKey<Private>,
        leaf: X509,
        intermediates: Vec<X509>,
        roots: TrustBundle,
    ) -> Result<Self, CertificateError> {
        let info = inspect_leaf(&leaf.to_der()?)?;
        if &info.identity != expected {
            return Err(CertificateError::WrongIdentity {
                expected: Box::new(expected.clone()),
                found: Box::new(info.identity),
            });
        }
        if !leaf.public_key()?.public_eq(&key) {
            return Err(CertificateError::KeyMismatch);
        }
        let mut stack = Stack::new()?;
        for cert in &intermediates {
            stack.push(cert.clone())?;
        }
        roots.verify_chain(&leaf, &stack)?;
        Ok(Self {
            identity: info.identity,
            leaf,
            intermediates,
            key,
            roots,
            not_before: epoch_seconds(info.not_before),
            not_after: epoch_seconds(info.not_after),
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn leaf(&self) -> &X509 {
        &self.leaf
    }

    pub fn intermediates(&self) -> &[X509] {
        &self.intermediates
    }

    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }

    pub fn roots(&self) -> &TrustBundle {
        &self.roots
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Half way through the validity period: when renewal is due.
    pub fn refresh_at(&self) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
        self.not_before + lifetime / 2
    }

    /// Time left before expiry, zero once expired.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

fn epoch_seconds(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH,
    }
}
