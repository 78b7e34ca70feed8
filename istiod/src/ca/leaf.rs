//! Building the certificates the CA signs: workload leaves (one SPIFFE URI
//! SAN) and istiod's own serving certificate (DNS SANs), plus the
//! self-signed root.

use boring::asn1::{Asn1Integer, Asn1Time};
use boring::bn::{BigNum, MsbOption};
use boring::error::ErrorStack;
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{HasPublic, PKeyRef, Private};
use boring::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use boring::x509::{X509, X509Builder, X509NameBuilder, X509Ref};
use mesh_model::Identity;

/// What a leaf is for; decides its SAN and extended key usage.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LeafKind<'a> {
    /// A workload: exactly this SPIFFE URI, client and server auth.
    Workload(&'a Identity),
    /// A server reached by host name (istiod's own TLS certificate).
    Server(&'a [String]),
}

/// Validity period, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// A random positive 128-bit serial number.
fn serial() -> Result<Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(128, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

fn base_builder<K: HasPublic>(
    key: &PKeyRef<K>,
    validity: Validity,
) -> Result<X509Builder, ErrorStack> {
    let mut b = X509::builder()?;
    b.set_version(2)?;
    b.set_serial_number(&*serial()?)?;
    b.set_pubkey(key)?;
    b.set_not_before(&*Asn1Time::from_unix(validity.not_before)?)?;
    b.set_not_after(&*Asn1Time::from_unix(validity.not_after)?)?;
    Ok(b)
}

/// Signs a leaf for `key` under `issuer`. Only the key comes from the
/// request; the subject is empty and the SAN (critical, as the subject is
/// empty) is exactly what `kind` says.
pub(crate) fn build_leaf<K: HasPublic>(
    issuer: &X509Ref,
    issuer_key: &PKeyRef<Private>,
    key: &PKeyRef<K>,
    kind: LeafKind<'_>,
    validity: Validity,
) -> Result<X509, ErrorStack> {
    let mut b = base_builder(key, validity)?;
    b.set_subject_name(&X509NameBuilder::new()?.build())?;
    b.set_issuer_name(issuer.subject_name())?;
    b.append_extension(&*BasicConstraints::new().critical().build()?)?;
    b.append_extension(
        &*KeyUsage::new().critical().digital_signature().key_encipherment().build()?,
    )?;
    let mut eku = ExtendedKeyUsage::new();
    eku.server_auth();
    if matches!(kind, LeafKind::Workload(_)) {
        eku.client_auth();
    }
    b.append_extension(&*eku.build()?)?;
    let mut san = SubjectAlternativeName::new();
    san.critical();
    match kind {
        LeafKind::Workload(identity) => {
            san.uri(&identity.to_string());
        }
        LeafKind::Server(names) => {
            for name in names {
                san.dns(name);
            }
        }
    }
    let san = san.build(&b.x509v3_context(Some(issuer), None))?;
    b.append_extension(&san)?;
    if issuer.subject_key_id().is_some() {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(issuer), None))?;
        b.append_extension(&aki)?;
    }
    b.sign(issuer_key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// A self-signed CA certificate for `key` with organization `org`.
pub(crate) fn build_root(
    org: &str,
    key: &PKeyRef<Private>,
    validity: Validity,
) -> Result<X509, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, org)?;
    let name = name.build();
    let mut b = base_builder(key, validity)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.append_extension(&*BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(
        &*KeyUsage::new().critical().key_cert_sign().crl_sign().digital_signature().build()?,
    )?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(&ski)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}
