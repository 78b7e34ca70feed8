//! The self-signed root in Secret `istio-ca-secret` in istiod's namespace,
//! keys `ca-cert.pem` and `ca-key.pem`, as upstream. Replicas starting
//! together race to create it; the loser adopts the winner's root.

use std::collections::BTreeMap;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::ca::CaError;
use crate::ca::root::{RootStore, StoredCa};

/// Name of the Secret holding the self-signed root.
pub const CA_SECRET: &str = "istio-ca-secret";
/// Its type, as upstream.
const CA_SECRET_TYPE: &str = "istio.io/ca-root";
const CERT_KEY: &str = "ca-cert.pem";
const KEY_KEY: &str = "ca-key.pem";

/// Keeps the root in a Secret.
#[derive(Clone)]
pub struct SecretRootStore {
    client: kube::Client,
    namespace: String,
}

impl std::fmt::Debug for SecretRootStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRootStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl SecretRootStore {
    /// The store in `namespace` (istiod's own).
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        Self { client, namespace: namespace.into() }
    }

    fn api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn context(&self, verb: &str) -> String {
        format!("{verb} Secret {}/{CA_SECRET}", self.namespace)
    }

    async fn load_now(&self) -> Result<Option<StoredCa>, CaError> {
        let Some(secret) =
            self.api().get_opt(CA_SECRET).await.map_err(CaError::kube(self.context("reading")))?
        else {
            return Ok(None);
        };
        let data = secret.data.unwrap_or_default();
        let field = |key: &str| {
            data.get(key).map(|b| b.0.clone()).filter(|b| !b.is_empty()).ok_or_else(|| {
                CaError::InvalidCa(format!("Secret {}/{CA_SECRET} has no {key}", self.namespace))
            })
        };
        Ok(Some(StoredCa { cert_pem: field(CERT_KEY)?, key_pem: field(KEY_KEY)? }))
    }

    async fn create_now(&self, ca: StoredCa) -> Result<StoredCa, CaError> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(CA_SECRET.to_owned()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            type_: Some(CA_SECRET_TYPE.to_owned()),
            data: Some(BTreeMap::from([
                (CERT_KEY.to_owned(), ByteString(ca.cert_pem.clone())),
                (KEY_KEY.to_owned(), ByteString(ca.key_pem.clone())),
            ])),
            ..Secret::default()
        };
        match self.api().create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(ca),
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                tracing::info!("another istiod stored the CA root first; using it");
                self.load_now().await?.ok_or_else(|| {
                    CaError::InvalidCa(format!(
                        "Secret {}/{CA_SECRET} exists but cannot be read",
                        self.namespace
                    ))
                })
            }
            Err(e) => Err(CaError::kube(self.context("creating"))(e)),
        }
    }
}

impl RootStore for SecretRootStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredCa>, CaError>> {
        self.load_now().boxed()
    }

    fn create(&self, ca: StoredCa) -> BoxFuture<'_, Result<StoredCa, CaError>> {
        self.create_now(ca).boxed()
    }
}
