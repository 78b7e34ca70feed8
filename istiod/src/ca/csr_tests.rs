use boring::nid::Nid;

use super::*;
use crate::ca::testing::{CsrSpec, csr_pem, ec_key, p256, rsa};

const TD: &str = "cluster.local";
const ID: &str = "spiffe://cluster.local/ns/default/sa/app";

fn reason(pem: &str) -> RefusalReason {
    check_csr(pem, TD).unwrap_err().reason()
}

#[test]
fn p256_csr_is_accepted_with_its_identity() {
    let key = p256();
    let checked = check_csr(&csr_pem(&key, &CsrSpec::uri(ID)), TD).unwrap();
    assert_eq!(checked.identity().to_string(), ID);
    assert!(checked.public_key().public_eq(&key));
}

#[test]
fn mesh_identity_csr_is_accepted() {
    let id: Identity = ID.parse().unwrap();
    let req = mesh_identity::csr::generate(&id).unwrap();
    assert_eq!(check_csr(&req.csr_pem, TD).unwrap().identity(), &id);
}

#[test]
fn rsa_2048_is_accepted_and_1024_refused() {
    assert!(check_csr(&csr_pem(&rsa(2048), &CsrSpec::uri(ID)), TD).is_ok());
    assert_eq!(reason(&csr_pem(&rsa(1024), &CsrSpec::uri(ID))), RefusalReason::CsrBadKey);
}

#[test]
fn other_curves_are_refused() {
    assert_eq!(
        reason(&csr_pem(&ec_key(Nid::SECP384R1), &CsrSpec::uri(ID))),
        RefusalReason::CsrBadKey
    );
}

#[test]
fn two_sans_are_refused() {
    let spec = CsrSpec {
        uris: vec![ID.to_owned(), "spiffe://cluster.local/ns/kube-system/sa/admin".to_owned()],
        ..CsrSpec::default()
    };
    assert_eq!(reason(&csr_pem(&p256(), &spec)), RefusalReason::CsrSanCount);
    let uri_and_dns = CsrSpec {
        uris: vec![ID.to_owned()],
        dns: vec!["app.default.svc".to_owned()],
        ..CsrSpec::default()
    };
    assert_eq!(reason(&csr_pem(&p256(), &uri_and_dns)), RefusalReason::CsrSanCount);
}

#[test]
fn no_san_is_refused() {
    assert_eq!(reason(&csr_pem(&p256(), &CsrSpec::default())), RefusalReason::CsrSanCount);
}

#[test]
fn wrong_sans_are_refused() {
    let dns_only = CsrSpec { dns: vec!["app.default.svc".to_owned()], ..CsrSpec::default() };
    assert_eq!(reason(&csr_pem(&p256(), &dns_only)), RefusalReason::CsrBadSan);
    for uri in [
        "spiffe://other.domain/ns/default/sa/app",
        "spiffe://cluster.local/ns/default",
        "https://cluster.local/ns/default/sa/app",
    ] {
        assert_eq!(
            reason(&csr_pem(&p256(), &CsrSpec::uri(uri))),
            RefusalReason::CsrBadSan,
            "{uri}"
        );
    }
}

#[test]
fn ca_flag_is_refused() {
    let spec = CsrSpec { ca: true, ..CsrSpec::uri(ID) };
    assert_eq!(reason(&csr_pem(&p256(), &spec)), RefusalReason::CsrCaRequested);
}

#[test]
fn bad_signature_is_refused() {
    let spec = CsrSpec { sign_with_other_key: true, ..CsrSpec::uri(ID) };
    assert_eq!(reason(&csr_pem(&p256(), &spec)), RefusalReason::CsrBadSignature);
}

#[test]
fn garbage_is_refused() {
    for garbage in [
        "",
        "not a csr",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        assert_eq!(reason(garbage), RefusalReason::CsrUnparsable, "{garbage:?}");
    }
    let cert = mesh_test_support::TestCa::root("x").unwrap().root_pem();
    assert_eq!(reason(&cert), RefusalReason::CsrUnparsable);
}
