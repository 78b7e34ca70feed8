//! Checking a workload's certificate signing request.
//!
//! Nothing from the CSR is copied into the certificate except its public key:
//! the subject and the requested extensions are only inspected, to refuse
//! requests that ask for more than one identity, for a foreign trust domain,
//! or for a CA. BoringSSL parses the request and checks its self-signature
//! and key; x509-parser reads the requested extensions (from every
//! extension-request attribute, not only the first).

use boring::ec::EcKeyRef;
use boring::nid::Nid;
use boring::pkey::{Id, PKey, PKeyRef, Public};
use boring::x509::X509Req;
use mesh_model::Identity;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::{Refusal, RefusalReason};

/// Smallest and largest RSA modulus accepted, in bits.
const RSA_BITS: std::ops::RangeInclusive<u32> = 2048..=8192;

/// A CSR that passed every check: its key and the identity it asks for.
pub struct CheckedCsr {
    public_key: PKey<Public>,
    identity: Identity,
}

impl std::fmt::Debug for CheckedCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedCsr")
            .field("identity", &self.identity.to_string())
            .field("key_bits", &self.public_key.bits())
            .finish()
    }
}

impl CheckedCsr {
    pub fn public_key(&self) -> &PKeyRef<Public> {
        &self.public_key
    }

    /// The identity named by the CSR's only SAN.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

fn refuse(reason: RefusalReason, detail: impl Into<String>) -> Refusal {
    Refusal::new(reason, detail)
}

/// Checks a PEM CSR: parsable, acceptable key, valid self-signature, not
/// asking for a CA, exactly one SAN that is a SPIFFE URI in `trust_domain`.
pub fn check_csr(pem: &str, trust_domain: &str) -> Result<CheckedCsr, Refusal> {
    use RefusalReason::*;
    let req = X509Req::from_pem(pem.as_bytes())
        .map_err(|e| refuse(CsrUnparsable, format!("PEM PKCS#10: {e}")))?;
    let der = req.to_der().map_err(|e| refuse(CsrUnparsable, format!("re-encoding: {e}")))?;
    let (rest, parsed) = X509CertificationRequest::from_der(&der)
        .map_err(|e| refuse(CsrUnparsable, format!("DER: {e}")))?;
    if !rest.is_empty() {
        return Err(refuse(CsrUnparsable, "trailing bytes after the request"));
    }

    let public_key = req.public_key().map_err(|e| refuse(CsrBadKey, format!("public key: {e}")))?;
    check_key(&public_key).map_err(|detail| refuse(CsrBadKey, detail))?;
    match req.verify(&public_key) {
        Ok(true) => {}
        Ok(false) => return Err(refuse(CsrBadSignature, "self-signature mismatch")),
        Err(e) => return Err(refuse(CsrBadSignature, e.to_string())),
    }

    let identity = requested_identity(&parsed, trust_domain)?;
    Ok(CheckedCsr { public_key, identity })
}

/// ECDSA on P-256, or RSA with a 2048 to 8192-bit modulus.
fn check_key(key: &PKeyRef<Public>) -> Result<(), String> {
    match key.id() {
        Id::EC => {
            let ec: boring::ec::EcKey<Public> = key.ec_key().map_err(|e| format!("EC key: {e}"))?;
            let curve = curve_of(&ec);
            if curve == Some(Nid::X9_62_PRIME256V1) {
                Ok(())
            } else {
                Err(format!("EC curve {curve:?} is not P-256"))
            }
        }
        Id::RSA => {
            let bits = key.bits();
            if RSA_BITS.contains(&bits) { Ok(()) } else { Err(format!("RSA key of {bits} bits")) }
        }
        other => Err(format!("key type {other:?}")),
    }
}

fn curve_of(ec: &EcKeyRef<Public>) -> Option<Nid> {
    ec.group().curve_name()
}

/// The single SPIFFE identity the CSR's extensions ask for.
fn requested_identity(
    csr: &X509CertificationRequest<'_>,
    trust_domain: &str,
) -> Result<Identity, Refusal> {
    use RefusalReason::*;
    let mut names: Vec<&GeneralName<'_>> = Vec::new();
    let requests = csr.certification_request_info.iter_attributes().filter_map(|attr| {
        match attr.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(req) => Some(req),
            _ => None,
        }
    });
    for request in requests {
        for ext in &request.extensions {
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) if bc.ca => {
                    return Err(refuse(CsrCaRequested, "basicConstraints CA:TRUE"));
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    names.extend(san.general_names.iter());
                }
                ParsedExtension::ParseError { error } => {
                    return Err(refuse(
                        CsrUnparsable,
                        format!("requested extension {}: {error}", ext.oid),
                    ));
                }
                _ => {}
            }
        }
    }
    let uri = match names.as_slice() {
        [GeneralName::URI(uri)] => *uri,
        [other] => return Err(refuse(CsrBadSan, format!("SAN {other} is not a URI"))),
        many => return Err(refuse(CsrSanCount, format!("{} SANs", many.len()))),
    };
    let identity: Identity =
        uri.parse().map_err(|e| refuse(CsrBadSan, format!("SAN {uri:?}: {e}")))?;
    if identity.trust_domain() != trust_domain {
        return Err(refuse(
            CsrBadSan,
            format!("SAN {uri:?} is not in trust domain {trust_domain:?}"),
        ));
    }
    Ok(identity)
}

#[cfg(test)]
#[path = "csr_tests.rs"]
mod tests;
