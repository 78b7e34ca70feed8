//! Keys and certificate signing requests for workload identities: an ECDSA
//! P-256 key and a PKCS#10 request whose only SAN is the SPIFFE URI.

use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::stack::Stack;
use boring::x509::X509ReqBuilder;
use boring::x509::extension::SubjectAlternativeName;
use mesh_model::Identity;

use crate::CertificateError;

/// A fresh key and the PEM CSR to send to the CA.
pub struct CertificateRequest {
    pub key: PKey<Private>,
    pub csr_pem: String,
}

impl std::fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRequest").field("csr_pem", &self.csr_pem).finish_non_exhaustive()
    }
}

/// Generates a P-256 key and a CSR for `identity`.
pub fn generate(identity: &Identity) -> Result<CertificateRequest, CertificateError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut builder = X509ReqBuilder::new()?;
    builder.set_version(0)?;
    builder.set_pubkey(&key)?;
    let san = SubjectAlternativeName::new()
        .uri(&identity.to_string())
        .build(&builder.x509v3_context(None))?;
    let mut extensions = Stack::new()?;
    extensions.push(san)?;
    builder.add_extensions(&extensions)?;
    builder.sign(&key, MessageDigest::sha256())?;
    let csr_pem = String::from_utf8_lossy(&builder.build().to_pem()?).into_owned();
    Ok(CertificateRequest { key, csr_pem })
}

#[cfg(test)]
mod tests {
    use super::*;
    use boring::x509::X509Req;
    use x509_parser::prelude::FromDer;

    #[test]
    fn csr_carries_the_identity_and_a_p256_key() {
        let id = Identity::new("cluster.local", "ns", "sa").unwrap();
        let req = generate(&id).unwrap();
        let parsed = X509Req::from_pem(req.csr_pem.as_bytes()).unwrap();
        let public = parsed.public_key().unwrap();
        assert!(parsed.verify(&public).unwrap(), "self-signature verifies");
        assert!(public.public_eq(&req.key));
        let ec = public.ec_key().unwrap();
        assert_eq!(ec.group().curve_name(), Some(Nid::X9_62_PRIME256V1));
        let der = parsed.to_der().unwrap();
        let (_, der_req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        let uris: Vec<String> = der_req
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|ext| match ext {
                x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .flat_map(|san| san.general_names.iter().map(|n| n.to_string()))
            .collect();
        assert_eq!(uris, vec!["URI(spiffe://cluster.local/ns/ns/sa/sa)".to_owned()]);
    }
}
