use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::BoxFuture;
use mesh_identity::WorkloadCertificate;
use prost_types::{Struct, Value};
use tonic::Code;
use tonic::metadata::MetadataValue;

use super::*;
use crate::ca::authn::{Caller, PodRef};
use crate::ca::local::{LocalNodeDirectory, LocalTokenAuthenticator};
use crate::ca::root::StoredCa;
use crate::ca::testing::{CsrSpec, csr_pem, p256, rsa};
use crate::ca::{DEFAULT_MAX_CSR_BYTES, ServiceAccountRef, TtlPolicy};

const TD: &str = "cluster.local";

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new(TD, ns, sa).unwrap()
}

/// Tokens mapped to callers; anything else is an invalid token.
struct StaticAuthenticator(BTreeMap<&'static str, Caller>);

impl Authenticator for StaticAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Refusal>> {
        let result = self
            .0
            .get(token)
            .cloned()
            .ok_or_else(|| Refusal::new(RefusalReason::InvalidToken, "unknown"));
        std::future::ready(result).boxed()
    }
}

struct Fixture {
    service: CaService,
    metrics: CaMetrics,
}

fn fixture_with(
    authenticator: Arc<dyn Authenticator>,
    directory: Option<Arc<dyn NodeDirectory>>,
) -> Fixture {
    let authority = StoredCa::generate(TD, SystemTime::now()).unwrap().to_authority().unwrap();
    let (_tx, rx) = watch::channel(Arc::new(authority));
    let metrics = CaMetrics::default();
    let config = CaConfig::new(TD, "istio-system").unwrap();
    let service = CaService::new(config, rx, authenticator, directory, metrics.clone());
    Fixture { service, metrics }
}

/// Callers: `app` (default/app, node n1), `ztunnel-n1` (istio-system/ztunnel
/// on n1), `ztunnel-nowhere` (no node or pod), `ztunnel-pod` (bound to a
/// pod, which the local directory cannot resolve). Placement: default/app on
/// n1, default/db on n2.
fn fixture() -> Fixture {
    let caller = |identity: Identity, node: Option<&str>| Caller {
        identity,
        node: node.map(str::to_owned),
        pod: None,
    };
    let ztunnel = id("istio-system", "ztunnel");
    let mut pod_bound = caller(ztunnel.clone(), None);
    pod_bound.pod = Some(PodRef { name: "ztunnel-abc".into(), uid: "1234".into() });
    let authenticator = StaticAuthenticator(BTreeMap::from([
        ("app", caller(id("default", "app"), Some("n1"))),
        ("ztunnel-n1", caller(ztunnel.clone(), Some("n1"))),
        ("ztunnel-nowhere", caller(ztunnel, None)),
        ("ztunnel-pod", pod_bound),
    ]));
    let directory = LocalNodeDirectory::new();
    directory.replace([
        ("n1".to_owned(), ServiceAccountRef::new("default", "app")),
        ("n2".to_owned(), ServiceAccountRef::new("default", "db")),
    ]);
    fixture_with(Arc::new(authenticator), Some(Arc::new(directory)))
}

struct Ask<'a> {
    token: Option<&'a str>,
    csr: String,
    impersonate: Option<Value>,
    validity: i64,
}

impl<'a> Ask<'a> {
    fn new(token: &'a str, csr: String) -> Self {
        Self { token: Some(token), csr, impersonate: None, validity: 0 }
    }

    fn impersonating(mut self, spiffe: &str) -> Self {
        self.impersonate = Some(Value { kind: Some(Kind::StringValue(spiffe.to_owned())) });
        self
    }

    fn request(self) -> Request<IstioCertificateRequest> {
        let metadata = self
            .impersonate
            .map(|v| Struct { fields: BTreeMap::from([(IMPERSONATED_IDENTITY.to_owned(), v)]) });
        let mut request = Request::new(IstioCertificateRequest {
            csr: self.csr,
            validity_duration: self.validity,
            metadata,
        });
        if let Some(token) = self.token {
            request.metadata_mut().insert(
                "authorization",
                MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
            );
        }
        request
    }
}

fn csr_for(identity: &Identity) -> String {
    csr_pem(&p256(), &CsrSpec::uri(&identity.to_string()))
}

async fn call(f: &Fixture, ask: Ask<'_>) -> Result<Vec<String>, Status> {
    f.service.create_certificate(ask.request()).await.map(|r| r.into_inner().cert_chain)
}

/// Asserts the refusal's code and that exactly its metric label moved.
async fn assert_refused(f: &Fixture, ask: Ask<'_>, code: Code, reason: RefusalReason) {
    let before = f.metrics.refusal_count(reason);
    let status = call(f, ask).await.unwrap_err();
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(f.metrics.refusal_count(reason), before + 1, "metric {reason}");
}

#[tokio::test]
async fn own_identity_is_issued() {
    let f = fixture();
    let app = id("default", "app");
    let key = p256();
    let ask = Ask::new("app", csr_pem(&key, &CsrSpec::uri(&app.to_string())));
    let chain = call(&f, ask).await.unwrap();
    WorkloadCertificate::from_chain_pem(&app, key, &chain).unwrap();
    assert_eq!(f.metrics.received_count(), 1);
    assert_eq!(f.metrics.issued_count(), 1);
}

#[tokio::test]
async fn rsa_2048_is_issued() {
    let f = fixture();
    let app = id("default", "app");
    let key = rsa(2048);
    let ask = Ask::new("app", csr_pem(&key, &CsrSpec::uri(&app.to_string())));
    let chain = call(&f, ask).await.unwrap();
    WorkloadCertificate::from_chain_pem(&app, key, &chain).unwrap();
}

#[tokio::test]
async fn authentication_refusals() {
    let f = fixture();
    let csr = csr_for(&id("default", "app"));
    let mut no_token = Ask::new("", csr.clone());
    no_token.token = None;
    assert_refused(&f, no_token, Code::Unauthenticated, RefusalReason::MissingToken).await;
    assert_refused(
        &f,
        Ask::new("garbage", csr),
        Code::Unauthenticated,
        RefusalReason::InvalidToken,
    )
    .await;
    assert_eq!(f.metrics.authentication_failures(), 2);
    assert_eq!(f.metrics.issued_count(), 0);
}

#[tokio::test]
async fn another_identity_is_denied() {
    let f = fixture();
    let ask = Ask::new("app", csr_for(&id("default", "db")));
    assert_refused(&f, ask, Code::PermissionDenied, RefusalReason::IdentityMismatch).await;
}

#[tokio::test]
async fn node_agent_impersonates_only_workloads_on_its_node() {
    let f = fixture();
    let app = id("default", "app");
    let key = p256();
    let ask = Ask::new("ztunnel-n1", csr_pem(&key, &CsrSpec::uri(&app.to_string())))
        .impersonating(&app.to_string());
    let chain = call(&f, ask).await.unwrap();
    WorkloadCertificate::from_chain_pem(&app, key, &chain).unwrap();

    let db = id("default", "db");
    let ask = Ask::new("ztunnel-n1", csr_for(&db)).impersonating(&db.to_string());
    assert_refused(&f, ask, Code::PermissionDenied, RefusalReason::WorkloadNotOnNode).await;

    // Authorized for app, but the CSR asks for db.
    let ask = Ask::new("ztunnel-n1", csr_for(&db)).impersonating(&app.to_string());
    assert_refused(&f, ask, Code::PermissionDenied, RefusalReason::IdentityMismatch).await;
}

#[tokio::test]
async fn impersonation_needs_a_trusted_agent_with_a_known_node() {
    let f = fixture();
    let other = id("default", "other");
    let ask = Ask::new("app", csr_for(&other)).impersonating(&other.to_string());
    assert_refused(&f, ask, Code::PermissionDenied, RefusalReason::NotTrustedNodeAgent).await;

    let app = id("default", "app");
    for token in ["ztunnel-nowhere", "ztunnel-pod"] {
        let ask = Ask::new(token, csr_for(&app)).impersonating(&app.to_string());
        assert_refused(&f, ask, Code::PermissionDenied, RefusalReason::CallerNodeUnknown).await;
    }

    let no_directory = fixture_with(
        Arc::new(StaticAuthenticator(BTreeMap::from([(
            "ztunnel-n1",
            Caller { identity: id("istio-system", "ztunnel"), node: Some("n1".into()), pod: None },
        )]))),
        None,
    );
    let ask = Ask::new("ztunnel-n1", csr_for(&app)).impersonating(&app.to_string());
    assert_refused(&no_directory, ask, Code::PermissionDenied, RefusalReason::NotTrustedNodeAgent)
        .await;
}

#[tokio::test]
async fn malformed_impersonated_identity_is_invalid() {
    let f = fixture();
    let csr = csr_for(&id("default", "app"));
    for bad in ["not-a-spiffe-id", "spiffe://other.domain/ns/default/sa/app"] {
        let ask = Ask::new("ztunnel-n1", csr.clone()).impersonating(bad);
        assert_refused(&f, ask, Code::InvalidArgument, RefusalReason::BadImpersonatedIdentity)
            .await;
    }
    let mut ask = Ask::new("ztunnel-n1", csr);
    ask.impersonate = Some(Value { kind: Some(Kind::NumberValue(1.0)) });
    assert_refused(&f, ask, Code::InvalidArgument, RefusalReason::BadImpersonatedIdentity).await;
}

#[tokio::test]
async fn bad_csrs_are_invalid_arguments() {
    let f = fixture();
    let app = id("default", "app").to_string();
    let two_sans =
        CsrSpec { uris: vec![app.clone(), id("default", "db").to_string()], ..CsrSpec::default() };
    let ca = CsrSpec { ca: true, ..CsrSpec::uri(&app) };
    let bad_signature = CsrSpec { sign_with_other_key: true, ..CsrSpec::uri(&app) };
    let dns = CsrSpec { dns: vec!["app.default.svc".into()], ..CsrSpec::default() };
    let cases = [
        (csr_pem(&p256(), &two_sans), RefusalReason::CsrSanCount),
        (csr_pem(&p256(), &ca), RefusalReason::CsrCaRequested),
        ("garbage".to_owned(), RefusalReason::CsrUnparsable),
        (csr_pem(&rsa(1024), &CsrSpec::uri(&app)), RefusalReason::CsrBadKey),
        (csr_pem(&p256(), &bad_signature), RefusalReason::CsrBadSignature),
        (csr_pem(&p256(), &dns), RefusalReason::CsrBadSan),
    ];
    for (csr, reason) in cases {
        assert_refused(&f, Ask::new("app", csr), Code::InvalidArgument, reason).await;
    }
}

#[tokio::test]
async fn oversized_csr_is_resource_exhausted() {
    let f = fixture();
    let csr = "A".repeat(DEFAULT_MAX_CSR_BYTES + 1);
    assert_refused(&f, Ask::new("app", csr), Code::ResourceExhausted, RefusalReason::CsrTooLarge)
        .await;
}

#[tokio::test]
async fn ttl_default_requested_capped_and_negative() {
    let f = fixture();
    let app = id("default", "app");
    // Seconds left on the leaf, rounded to ten seconds.
    let lifetime = |chain: Vec<String>| {
        let der = boring::x509::X509::from_pem(chain.first().unwrap().as_bytes())
            .unwrap()
            .to_der()
            .unwrap();
        let info = mesh_identity::verify::inspect_leaf(&der).unwrap();
        let now =
            i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap();
        Duration::from_secs(u64::try_from(info.not_after - now + 5).unwrap() / 10 * 10)
    };
    let policy = TtlPolicy::default();
    for (requested, granted) in
        [(0, policy.default), (3600, Duration::from_secs(3600)), (10 * 365 * 24 * 3600, policy.max)]
    {
        let mut ask = Ask::new("app", csr_for(&app));
        ask.validity = requested;
        assert_eq!(lifetime(call(&f, ask).await.unwrap()), granted, "requested {requested}");
    }
    let mut ask = Ask::new("app", csr_for(&app));
    ask.validity = -5;
    assert_refused(&f, ask, Code::InvalidArgument, RefusalReason::InvalidTtl).await;
}

#[tokio::test]
async fn local_mode_node_tokens_end_to_end() {
    let state = tempfile::tempdir().unwrap();
    let ztunnel = id("istio-system", "ztunnel");
    let authenticator =
        LocalTokenAuthenticator::load_or_create(state.path(), &["n1", "n2"], ztunnel).unwrap();
    let directory = LocalNodeDirectory::new();
    directory.replace([("n1".to_owned(), ServiceAccountRef::new("default", "app"))]);
    let f = fixture_with(Arc::new(authenticator), Some(Arc::new(directory)));
    let token = |node: &str| {
        std::fs::read_to_string(LocalTokenAuthenticator::token_path(state.path(), node))
            .unwrap()
            .trim()
            .to_owned()
    };
    let app = id("default", "app");
    let (n1, n2) = (token("n1"), token("n2"));
    let ask = Ask::new(&n1, csr_for(&app)).impersonating(&app.to_string());
    call(&f, ask).await.unwrap();
    let ask = Ask::new(&n2, csr_for(&app)).impersonating(&app.to_string());
    assert_refused(&f, ask, Code::PermissionDenied, RefusalReason::WorkloadNotOnNode).await;
    let ask = Ask::new("0000", csr_for(&app)).impersonating(&app.to_string());
    assert_refused(&f, ask, Code::Unauthenticated, RefusalReason::InvalidToken).await;
}
