//! The signing identity of the CA: its certificate and key, the chain up to
//! its root, and the trust bundle (a list of roots, so a root rotation can
//! trust the old and the new root during the overlap).
//!
//! Two sources: a self-signed root (see [`super::root`]) or a plug-in CA from
//! a `cacerts` directory (`ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`,
//! `root-cert.pem`, as upstream), whose chain may hold intermediates.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boring::pkey::{HasPublic, PKey, PKeyRef, Private};
use boring::stack::Stack;
use boring::x509::store::X509StoreBuilder;
use boring::x509::{X509, X509StoreContext};
use mesh_model::Identity;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::CaError;
use super::leaf::{LeafKind, Validity, build_leaf};

/// Issued leaves start this long before `now`, for peers with slow clocks.
const BACKDATE: Duration = Duration::from_secs(60);

/// A CA that can sign: certificate, key, chain to its root, trust bundle.
pub struct Authority {
    signing_key: PKey<Private>,
    /// From the signing certificate up to and including its root.
    issuer_chain: Vec<X509>,
    /// Every root workloads should trust; includes the chain's root.
    roots: Vec<X509>,
    /// Earliest expiry along `issuer_chain`, Unix seconds.
    chain_not_after: i64,
    root_not_after: i64,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subjects: Vec<String> =
            self.issuer_chain.iter().map(|c| format!("{:?}", c.subject_name())).collect();
        f.debug_struct("Authority")
            .field("issuer_chain", &subjects)
            .field("roots", &self.roots.len())
            .field("chain_not_after", &self.chain_not_after)
            .finish_non_exhaustive()
    }
}

fn invalid(reason: impl Into<String>) -> CaError {
    CaError::InvalidCa(reason.into())
}

/// Not-after (Unix seconds) and CA flag of a certificate.
fn inspect(cert: &X509) -> Result<(i64, bool), CaError> {
    let der = cert.to_der().map_err(CaError::boring("encoding a CA certificate"))?;
    let (_, parsed) = X509Certificate::from_der(&der)
        .map_err(|e| invalid(format!("parsing a CA certificate: {e}")))?;
    let is_ca = parsed.extensions().iter().any(
        |ext| matches!(ext.parsed_extension(), ParsedExtension::BasicConstraints(bc) if bc.ca),
    );
    Ok((parsed.validity().not_after.timestamp(), is_ca))
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, CaError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(CaError::io(format!("reading {}", path.display())))
}

fn parse_certs(pem: &[u8], what: &'static str) -> Result<Vec<X509>, CaError> {
    X509::stack_from_pem(pem).map_err(CaError::boring(what))
}

impl Authority {
    /// Checks and assembles CA material: the key must match `signing_cert`,
    /// which must be a CA and chain (through `intermediates`, in any order)
    /// to one of `roots`.
    pub fn new(
        signing_cert: X509,
        signing_key: PKey<Private>,
        intermediates: Vec<X509>,
        roots: Vec<X509>,
    ) -> Result<Self, CaError> {
        let public = signing_cert
            .public_key()
            .map_err(CaError::boring("reading the CA certificate's key"))?;
        if !public.public_eq(&signing_key) {
            return Err(invalid("the CA key does not match the CA certificate"));
        }
        if !inspect(&signing_cert)?.1 {
            return Err(invalid("the CA certificate is not a CA (basicConstraints)"));
        }
        if roots.is_empty() {
            return Err(invalid("no root certificate"));
        }
        let issuer_chain = verified_chain(&signing_cert, &intermediates, &roots)?;
        let mut chain_not_after = i64::MAX;
        for cert in &issuer_chain {
            chain_not_after = chain_not_after.min(inspect(cert)?.0);
        }
        let root_not_after = match issuer_chain.last() {
            Some(root) => inspect(root)?.0,
            None => return Err(invalid("empty verified chain")),
        };
        Ok(Self { signing_key, issuer_chain, roots, chain_not_after, root_not_after })
    }

    /// A self-signed root that signs directly.
    pub fn self_signed(root: X509, key: PKey<Private>) -> Result<Self, CaError> {
        Self::new(root.clone(), key, vec![], vec![root])
    }

    /// Loads a plug-in CA from a `cacerts` directory: `ca-cert.pem` (the
    /// signing CA), `ca-key.pem`, `root-cert.pem` (one or more roots) and,
    /// optionally, `cert-chain.pem` (the signing CA's chain; it may include
    /// `ca-cert.pem` and the root, which are skipped).
    pub fn from_cacerts_dir(dir: &Path) -> Result<Self, CaError> {
        let cert = parse_certs(&read(dir, "ca-cert.pem")?, "parsing ca-cert.pem")?
            .into_iter()
            .next()
            .ok_or_else(|| invalid("ca-cert.pem holds no certificate"))?;
        let key = PKey::private_key_from_pem(&read(dir, "ca-key.pem")?)
            .map_err(CaError::boring("parsing ca-key.pem"))?;
        let roots = parse_certs(&read(dir, "root-cert.pem")?, "parsing root-cert.pem")?;
        let chain_path = dir.join("cert-chain.pem");
        let intermediates = if chain_path.exists() {
            parse_certs(&read(dir, "cert-chain.pem")?, "parsing cert-chain.pem")?
        } else {
            vec![]
        };
        Self::new(cert, key, intermediates, roots)
    }

    /// Every root to trust.
    pub fn roots(&self) -> &[X509] {
        &self.roots
    }

    /// The root this CA's chain ends at.
    pub fn issuing_root(&self) -> Option<&X509> {
        self.issuer_chain.last()
    }

    /// Expiry of the issuing root, Unix seconds.
    pub fn root_not_after(&self) -> i64 {
        self.root_not_after
    }

    /// The roots as concatenated PEM (`root-cert.pem`).
    pub fn trust_bundle_pem(&self) -> Result<String, CaError> {
        let mut out = String::new();
        for root in &self.roots {
            let pem = root.to_pem().map_err(CaError::boring("encoding a root"))?;
            out.push_str(&String::from_utf8_lossy(&pem));
        }
        Ok(out)
    }

    /// Issues a workload leaf for `identity` and returns the chain, leaf
    /// first and root last, one PEM certificate per entry.
    pub fn issue_workload<K: HasPublic>(
        &self,
        key: &PKeyRef<K>,
        identity: &Identity,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Vec<String>, CaError> {
        self.issue(key, LeafKind::Workload(identity), lifetime, now)
    }

    /// Issues a server certificate for host names (istiod's own TLS
    /// certificate); chain as in [`Authority::issue_workload`].
    pub fn issue_server<K: HasPublic>(
        &self,
        key: &PKeyRef<K>,
        dns_names: &[String],
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Vec<String>, CaError> {
        if dns_names.is_empty() {
            return Err(CaError::Config("a server certificate needs a host name".into()));
        }
        self.issue(key, LeafKind::Server(dns_names), lifetime, now)
    }

    fn issue<K: HasPublic>(
        &self,
        key: &PKeyRef<K>,
        kind: LeafKind<'_>,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Vec<String>, CaError> {
        let signing_cert =
            self.issuer_chain.first().ok_or_else(|| invalid("empty issuer chain"))?;
        let now = unix_seconds(now);
        let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        if self.chain_not_after <= now {
            return Err(invalid("the CA chain has expired"));
        }
        // Never outlive the issuing chain: such a leaf would not verify.
        let not_after = now.saturating_add(lifetime).min(self.chain_not_after);
        let backdate = i64::try_from(BACKDATE.as_secs()).unwrap_or(0);
        let validity = Validity { not_before: now.saturating_sub(backdate), not_after };
        let leaf = build_leaf(signing_cert, &self.signing_key, key, kind, validity)
            .map_err(CaError::boring("signing a leaf"))?;
        std::iter::once(&leaf)
            .chain(&self.issuer_chain)
            .map(|cert| {
                cert.to_pem()
                    .map(|pem| String::from_utf8_lossy(&pem).into_owned())
                    .map_err(CaError::boring("encoding the chain"))
            })
            .collect()
    }
}

/// Verifies `cert` up to one of `roots` and returns the chain BoringSSL
/// built, `cert` first and the root last.
fn verified_chain(cert: &X509, untrusted: &[X509], roots: &[X509]) -> Result<Vec<X509>, CaError> {
    let mut store = X509StoreBuilder::new().map_err(CaError::boring("building a trust store"))?;
    for root in roots {
        store
            .add_cert(root.clone())
            .map_err(CaError::boring("adding a root to the trust store"))?;
    }
    let store = store.build();
    let mut stack = Stack::new().map_err(CaError::boring("building the chain"))?;
    for c in untrusted {
        stack.push(c.clone()).map_err(CaError::boring("building the chain"))?;
    }
    let mut ctx = X509StoreContext::new().map_err(CaError::boring("verifying the CA chain"))?;
    let outcome = ctx
        .init(&store, cert, &stack, |c| {
            if c.verify_cert()? {
                Ok(Ok(c
                    .chain()
                    .map(|chain| chain.iter().map(ToOwned::to_owned).collect::<Vec<X509>>())))
            } else {
                let reason = match c.verify_result() {
                    Ok(()) => "verification failed".to_owned(),
                    Err(e) => format!("{} (at depth {})", e.error_string(), c.error_depth()),
                };
                Ok(Err(reason))
            }
        })
        .map_err(CaError::boring("verifying the CA chain"))?;
    match outcome {
        Ok(Some(chain)) if !chain.is_empty() => Ok(chain),
        Ok(_) => Err(invalid("verification produced no chain")),
        Err(reason) => {
            Err(invalid(format!("the CA certificate does not chain to the roots: {reason}")))
        }
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
