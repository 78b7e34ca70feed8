//! A throw-away certificate authority for TLS tests, able to issue the bad
//! certificates a hostile or broken peer might present (expired, several
//! SANs, CA flag on a leaf, wrong trust domain, foreign root).

use std::time::{SystemTime, UNIX_EPOCH};

use boring::asn1::Asn1Time;
use boring::bn::{BigNum, MsbOption};
use boring::ec::{EcGroup, EcKey};
use boring::error::ErrorStack;
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use boring::x509::{X509, X509NameBuilder};

/// What to put in a leaf.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub is_ca: bool,
    /// Validity relative to now, in seconds (negative = in the past).
    pub valid_from: i64,
    pub valid_until: i64,
}

impl LeafSpec {
    /// A well-formed workload leaf for `spiffe_id`, valid for an hour.
    pub fn workload(spiffe_id: &str) -> Self {
        Self {
            uri_sans: vec![spiffe_id.to_owned()],
            dns_sans: vec![],
            is_ca: false,
            valid_from: -60,
            valid_until: 3600,
        }
    }
}

/// A leaf, its key and its chain as a CA would return it (leaf first, root
/// last, PEM).
#[derive(Debug)]
pub struct IssuedLeaf {
    pub key: PKey<Private>,
    pub leaf: X509,
    pub chain_pem: Vec<String>,
}

/// A CA: a self-signed root, or an intermediate under another `TestCa`.
#[derive(Debug)]
pub struct TestCa {
    cert: X509,
    key: PKey<Private>,
    /// Issuers above this CA, nearest first, ending with the root.
    parents: Vec<X509>,
}

fn p256_key() -> Result<PKey<Private>, ErrorStack> {
    PKey::from_ec_key(EcKey::generate(&*EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?)?)
}

fn time(offset: i64) -> Result<Asn1Time, ErrorStack> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Asn1Time::from_unix(i64::try_from(now).unwrap_or(i64::MAX) + offset)
}

fn serial() -> Result<boring::asn1::Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

fn pem(cert: &X509) -> String {
    String::from_utf8_lossy(&cert.to_pem().unwrap_or_default()).into_owned()
}

impl TestCa {
    /// A new self-signed root CA named `name`, valid for a day.
    pub fn root(name: &str) -> Result<Self, ErrorStack> {
        let key = p256_key()?;
        let cert = Self::ca_cert(name, &key, None)?;
        Ok(Self { cert, key, parents: vec![] })
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> Result<Self, ErrorStack> {
        let key = p256_key()?;
        let cert = Self::ca_cert(name, &key, Some(self))?;
        let mut parents = vec![self.cert.clone()];
        parents.extend(self.parents.iter().cloned());
        Ok(Self { cert, key, parents })
    }

    fn ca_cert(
        name: &str,
        key: &PKey<Private>,
        issuer: Option<&TestCa>,
    ) -> Result<X509, ErrorStack> {
        let mut subject = X509NameBuilder::new()?;
        subject.append_entry_by_nid(Nid::ORGANIZATIONNAME, name)?;
        let subject = subject.build();
        let mut b = X509::builder()?;
        b.set_version(2)?;
        b.set_serial_number(&*serial()?)?;
        b.set_subject_name(&subject)?;
        b.set_issuer_name(issuer.map_or(&subject, |i| i.cert.subject_name()))?;
        b.set_pubkey(key)?;
        b.set_not_before(&*time(-60)?)?;
        b.set_not_after(&*time(86_400)?)?;
        b.append_extension(&*BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(&*KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
        b.sign(issuer.map_or(key, |i| &i.key), MessageDigest::sha256())?;
        Ok(b.build())
    }

    pub fn cert(&self) -> &X509 {
        &self.cert
    }

    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }

    /// The root at the top of this CA's chain, PEM.
    pub fn root_pem(&self) -> String {
        pem(self.parents.last().unwrap_or(&self.cert))
    }

    /// This CA's certificate and its issuers up to the root, PEM, nearest first.
    pub fn chain_pem(&self) -> Vec<String> {
        std::iter::once(&self.cert).chain(&self.parents).map(pem).collect()
    }

    /// Issues a leaf as described by `spec`.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedLeaf, ErrorStack> {
        let key = p256_key()?;
        let mut b = X509::builder()?;
        b.set_version(2)?;
        b.set_serial_number(&*serial()?)?;
        b.set_subject_name(&X509NameBuilder::new()?.build())?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(&key)?;
        b.set_not_before(&*time(spec.valid_from)?)?;
        b.set_not_after(&*time(spec.valid_until)?)?;
        let mut constraints = BasicConstraints::new();
        constraints.critical();
        if spec.is_ca {
            constraints.ca();
        }
        b.append_extension(&*constraints.build()?)?;
        b.append_extension(
            &*KeyUsage::new().critical().digital_signature().key_encipherment().build()?,
        )?;
        b.append_extension(&*ExtendedKeyUsage::new().server_auth().client_auth().build()?)?;
        if !(spec.uri_sans.is_empty() && spec.dns_sans.is_empty()) {
            let mut san = SubjectAlternativeName::new();
            san.critical();
            for uri in &spec.uri_sans {
                san.uri(uri);
            }
            for dns in &spec.dns_sans {
                san.dns(dns);
            }
            let ext = san.build(&b.x509v3_context(Some(&self.cert), None))?;
            b.append_extension(&ext)?;
        }
        b.sign(&self.key, MessageDigest::sha256())?;
        let leaf = b.build();
        let mut chain_pem = vec![pem(&leaf)];
        chain_pem.extend(self.chain_pem());
        Ok(IssuedLeaf { key, leaf, chain_pem })
    }
}
