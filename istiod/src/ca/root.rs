//! The self-signed root: generated once (P-256, ten years), persisted in a
//! [`RootStore`] and reloaded on every later start.
//!
//! Stores: [`super::local::FileRootStore`] (a state directory) and
//! [`super::kube::SecretRootStore`] (Secret `istio-ca-secret`, as upstream).

use std::time::{Duration, SystemTime};

use boring::ec::{EcGroup, EcKey};
use boring::nid::Nid;
use boring::pkey::PKey;
use boring::x509::X509;
use futures::future::BoxFuture;

use super::leaf::{Validity, build_root};
use super::{Authority, CaError};

/// Lifetime of a generated root.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A CA certificate and key as stored: PEM, `ca-cert.pem` and `ca-key.pem`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCa {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for StoredCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCa")
            .field("cert_pem", &String::from_utf8_lossy(&self.cert_pem))
            .finish_non_exhaustive()
    }
}

impl StoredCa {
    /// Generates a new root for `org` (the trust domain, as upstream).
    pub fn generate(org: &str, now: SystemTime) -> Result<Self, CaError> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
            .map_err(CaError::boring("P-256 group"))?;
        let key = EcKey::generate(&group)
            .and_then(PKey::from_ec_key)
            .map_err(CaError::boring("generating the root key"))?;
        let start = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let lifetime = i64::try_from(ROOT_LIFETIME.as_secs()).unwrap_or(i64::MAX);
        let validity = Validity {
            not_before: start.saturating_sub(60),
            not_after: start.saturating_add(lifetime),
        };
        let cert = build_root(org, &key, validity).map_err(CaError::boring("signing the root"))?;
        Ok(Self {
            cert_pem: cert.to_pem().map_err(CaError::boring("encoding the root"))?,
            key_pem: key
                .private_key_to_pem_pkcs8()
                .map_err(CaError::boring("encoding the root key"))?,
        })
    }

    /// Parses and checks the pair as a self-signed signing root.
    pub fn to_authority(&self) -> Result<Authority, CaError> {
        let cert =
            X509::from_pem(&self.cert_pem).map_err(CaError::boring("parsing ca-cert.pem"))?;
        let key = PKey::private_key_from_pem(&self.key_pem)
            .map_err(CaError::boring("parsing ca-key.pem"))?;
        Authority::self_signed(cert, key)
    }
}

/// Where the self-signed root is kept.
pub trait RootStore: Send + Sync {
    /// The stored root, if there is one.
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredCa>, CaError>>;
    /// Stores `ca` unless another root was stored first (a concurrent
    /// replica); returns the root that is stored now.
    fn create(&self, ca: StoredCa) -> BoxFuture<'_, Result<StoredCa, CaError>>;
}

/// Loads the stored root, or generates and stores one on first start.
pub async fn load_or_create_root(
    store: &dyn RootStore,
    trust_domain: &str,
) -> Result<Authority, CaError> {
    let stored = match store.load().await? {
        Some(stored) => {
            tracing::info!("loaded the CA root from its store");
            stored
        }
        None => {
            tracing::info!(%trust_domain, "no CA root stored; generating one");
            store.create(StoredCa::generate(trust_domain, SystemTime::now())?).await?
        }
    };
    stored.to_authority()
}
