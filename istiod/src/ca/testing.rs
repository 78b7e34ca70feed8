//! Test-only builders for CSRs the CA must accept or refuse.

use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::rsa::Rsa;
use boring::stack::Stack;
use boring::x509::X509ReqBuilder;
use boring::x509::extension::{BasicConstraints, SubjectAlternativeName};

pub(crate) fn ec_key(curve: Nid) -> PKey<Private> {
    PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(curve).unwrap()).unwrap()).unwrap()
}

pub(crate) fn p256() -> PKey<Private> {
    ec_key(Nid::X9_62_PRIME256V1)
}

pub(crate) fn rsa(bits: u32) -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
}

/// What to put in a CSR.
#[derive(Debug, Clone, Default)]
pub(crate) struct CsrSpec {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub ca: bool,
    /// Sign with another key than the one in the request.
    pub sign_with_other_key: bool,
}

impl CsrSpec {
    pub(crate) fn uri(uri: &str) -> Self {
        Self { uris: vec![uri.to_owned()], ..Self::default() }
    }
}

/// A PEM CSR for `key` built as `spec` says.
pub(crate) fn csr_pem(key: &PKey<Private>, spec: &CsrSpec) -> String {
    let mut builder = X509ReqBuilder::new().unwrap();
    builder.set_version(0).unwrap();
    builder.set_pubkey(key).unwrap();
    let mut extensions = Stack::new().unwrap();
    if !(spec.uris.is_empty() && spec.dns.is_empty()) {
        let mut san = SubjectAlternativeName::new();
        for uri in &spec.uris {
            san.uri(uri);
        }
        for dns in &spec.dns {
            san.dns(dns);
        }
        extensions.push(san.build(&builder.x509v3_context(None)).unwrap()).unwrap();
    }
    if spec.ca {
        extensions.push(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
    }
    builder.add_extensions(&extensions).unwrap();
    if spec.sign_with_other_key {
        builder.sign(&p256(), MessageDigest::sha256()).unwrap();
    } else {
        builder.sign(key, MessageDigest::sha256()).unwrap();
    }
    String::from_utf8(builder.build().to_pem().unwrap()).unwrap()
}
