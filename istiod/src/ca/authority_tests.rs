use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boring::pkey::{PKey, Private};
use mesh_identity::{TrustBundle, WorkloadCertificate};
use mesh_test_support::TestCa;
use x509_parser::extensions::GeneralName;

use super::*;
use crate::ca::csr::check_csr;
use crate::ca::root::StoredCa;
use crate::ca::testing::{CsrSpec, csr_pem, p256, rsa};

const ID: &str = "spiffe://cluster.local/ns/default/sa/app";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn self_signed() -> Authority {
    StoredCa::generate("cluster.local", SystemTime::now()).unwrap().to_authority().unwrap()
}

fn identity() -> Identity {
    ID.parse().unwrap()
}

fn unix(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// What the tests check on an issued leaf.
#[derive(Debug)]
struct LeafFacts {
    sans: Vec<String>,
    subject_empty: bool,
    ca: Option<bool>,
    digital_signature: bool,
    key_encipherment: bool,
    key_cert_sign: bool,
    server_auth: bool,
    client_auth: bool,
    not_before: i64,
    not_after: i64,
}

fn facts(pem: &str) -> LeafFacts {
    let der = X509::from_pem(pem.as_bytes()).unwrap().to_der().unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let mut f = LeafFacts {
        sans: vec![],
        subject_empty: cert.subject().iter().next().is_none(),
        ca: None,
        digital_signature: false,
        key_encipherment: false,
        key_cert_sign: false,
        server_auth: false,
        client_auth: false,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                f.sans.extend(san.general_names.iter().map(|n| match n {
                    GeneralName::URI(u) => format!("URI:{u}"),
                    other => format!("{other}"),
                }));
            }
            ParsedExtension::BasicConstraints(bc) => f.ca = Some(bc.ca),
            ParsedExtension::KeyUsage(ku) => {
                f.digital_signature = ku.digital_signature();
                f.key_encipherment = ku.key_encipherment();
                f.key_cert_sign = ku.key_cert_sign();
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                f.server_auth = eku.server_auth;
                f.client_auth = eku.client_auth;
            }
            _ => {}
        }
    }
    f
}

fn sign(authority: &Authority, key: &PKey<Private>, lifetime: Duration) -> Vec<String> {
    let csr = check_csr(&csr_pem(key, &CsrSpec::uri(ID)), "cluster.local").unwrap();
    authority.issue_workload(csr.public_key(), csr.identity(), lifetime, SystemTime::now()).unwrap()
}

fn assert_workload_leaf(chain: &[String]) {
    let leaf = facts(chain.first().unwrap());
    assert_eq!(leaf.sans, vec![format!("URI:{ID}")]);
    assert!(leaf.subject_empty, "nothing from the CSR subject");
    assert_eq!(leaf.ca, Some(false));
    assert!(leaf.digital_signature && leaf.key_encipherment && !leaf.key_cert_sign);
    assert!(leaf.server_auth && leaf.client_auth);
}

/// Verifies the chain with BoringSSL against its last element as the root.
fn verify_with_boring(chain: &[String], root: &X509) {
    let certs: Vec<X509> = chain.iter().map(|p| X509::from_pem(p.as_bytes()).unwrap()).collect();
    let (leaf, rest) = certs.split_first().unwrap();
    let (last, intermediates) = rest.split_last().unwrap();
    assert_eq!(last.to_der().unwrap(), root.to_der().unwrap(), "root last");
    let mut stack = Stack::new().unwrap();
    for c in intermediates {
        stack.push(c.clone()).unwrap();
    }
    TrustBundle::new(vec![root.clone()]).unwrap().verify_chain(leaf, &stack).unwrap();
}

#[test]
fn p256_leaf_has_exactly_the_spiffe_san_and_verifies() {
    let authority = self_signed();
    let key = p256();
    let chain = sign(&authority, &key, DAY);
    assert_eq!(chain.len(), 2, "leaf, root");
    assert_workload_leaf(&chain);
    verify_with_boring(&chain, authority.roots().first().unwrap());
    WorkloadCertificate::from_chain_pem(&identity(), key, &chain).unwrap();
}

#[test]
fn rsa_2048_leaf_verifies() {
    let authority = self_signed();
    let key = rsa(2048);
    let chain = sign(&authority, &key, DAY);
    assert_workload_leaf(&chain);
    WorkloadCertificate::from_chain_pem(&identity(), key, &chain).unwrap();
}

#[test]
fn lifetime_is_what_was_granted_backdated_a_minute() {
    let authority = self_signed();
    let before = unix(SystemTime::now());
    let leaf = facts(sign(&authority, &p256(), Duration::from_secs(3600)).first().unwrap());
    let after = unix(SystemTime::now());
    assert!((before..=after).contains(&(leaf.not_after - 3600)));
    assert!((before - 60..=after - 60).contains(&leaf.not_before));
}

#[test]
fn leaf_never_outlives_its_issuer() {
    // TestCa roots live one day.
    let ca = TestCa::root("short").unwrap();
    let authority = Authority::self_signed(ca.cert().clone(), ca.key().clone()).unwrap();
    let leaf = facts(sign(&authority, &p256(), 90 * DAY).first().unwrap());
    let root_not_after = facts(&ca.root_pem()).not_after;
    assert_eq!(leaf.not_after, root_not_after);

    // Once the issuer has expired, nothing is signed.
    let later = SystemTime::now() + 2 * DAY;
    let csr = check_csr(&csr_pem(&p256(), &CsrSpec::uri(ID)), "cluster.local").unwrap();
    let err = authority.issue_workload(csr.public_key(), csr.identity(), DAY, later).unwrap_err();
    assert!(matches!(err, CaError::InvalidCa(_)), "{err}");
}

#[test]
fn generated_root_is_a_ten_year_p256_ca() {
    let authority = self_signed();
    let root = facts(&authority.trust_bundle_pem().unwrap());
    assert_eq!(root.ca, Some(true));
    assert!(root.key_cert_sign);
    let years = (root.not_after - root.not_before) / (365 * 24 * 3600);
    assert_eq!(years, 10);
    let key = authority.roots().first().unwrap().public_key().unwrap();
    assert_eq!(key.bits(), 256);
    assert_eq!(authority.root_not_after(), root.not_after);
}

fn write_cacerts(dir: &Path, ca: &TestCa, roots_pem: &str) {
    std::fs::write(dir.join("ca-cert.pem"), ca.cert().to_pem().unwrap()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), ca.key().private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), ca.chain_pem().concat()).unwrap();
    std::fs::write(dir.join("root-cert.pem"), roots_pem).unwrap();
}

#[test]
fn plug_in_ca_with_an_intermediate_returns_leaf_intermediate_root() {
    let root = TestCa::root("plug-in root").unwrap();
    let intermediate = root.intermediate("plug-in intermediate").unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_cacerts(dir.path(), &intermediate, &root.root_pem());
    let authority = Authority::from_cacerts_dir(dir.path()).unwrap();

    let key = p256();
    let chain = sign(&authority, &key, DAY);
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(chain.get(1).unwrap().as_bytes(), intermediate.cert().to_pem().unwrap().as_slice());
    assert_workload_leaf(&chain);
    verify_with_boring(&chain, root.cert());
    WorkloadCertificate::from_chain_pem(&identity(), key, &chain).unwrap();
}

#[test]
fn trust_bundle_may_hold_several_roots() {
    let old = TestCa::root("old root").unwrap();
    let new = TestCa::root("new root").unwrap();
    let intermediate = new.intermediate("intermediate").unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_cacerts(dir.path(), &intermediate, &(old.root_pem() + &new.root_pem()));
    let authority = Authority::from_cacerts_dir(dir.path()).unwrap();
    assert_eq!(authority.roots().len(), 2);
    assert_eq!(authority.issuing_root().unwrap().to_der().unwrap(), new.cert().to_der().unwrap());
    let bundle = authority.trust_bundle_pem().unwrap();
    assert_eq!(TrustBundle::from_pem(bundle.as_bytes()).unwrap().roots().len(), 2);
    verify_with_boring(&sign(&authority, &p256(), DAY), new.cert());
}

#[test]
fn unusable_ca_material_is_refused() {
    let root = TestCa::root("root").unwrap();
    let other = TestCa::root("other").unwrap();
    let intermediate = root.intermediate("intermediate").unwrap();

    // Key of another CA.
    let err = Authority::new(
        intermediate.cert().clone(),
        other.key().clone(),
        vec![],
        vec![root.cert().clone()],
    )
    .unwrap_err();
    assert!(matches!(err, CaError::InvalidCa(_)), "{err}");

    // Chains to a root we were not given.
    let err = Authority::new(
        intermediate.cert().clone(),
        intermediate.key().clone(),
        vec![],
        vec![other.cert().clone()],
    )
    .unwrap_err();
    assert!(matches!(err, CaError::InvalidCa(_)), "{err}");

    // A leaf is not a CA.
    let leaf = root.issue(&mesh_test_support::LeafSpec::workload(ID)).unwrap();
    let err = Authority::new(leaf.leaf, leaf.key, vec![], vec![root.cert().clone()]).unwrap_err();
    assert!(matches!(err, CaError::InvalidCa(_)), "{err}");

    // Missing files.
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Authority::from_cacerts_dir(dir.path()), Err(CaError::Io { .. })));
}

#[test]
fn server_certificate_carries_dns_names() {
    let authority = self_signed();
    let key = p256();
    let names = vec!["istiod.istio-system.svc".to_owned()];
    let chain = authority.issue_server(&key, &names, DAY, SystemTime::now()).unwrap();
    let leaf = facts(chain.first().unwrap());
    assert_eq!(leaf.sans, vec!["DNSName(istiod.istio-system.svc)".to_owned()]);
    assert_eq!(leaf.ca, Some(false));
    assert!(leaf.server_auth && !leaf.client_auth);
    assert!(authority.issue_server(&key, &[], DAY, SystemTime::now()).is_err());
}
