//! etcd + kube-apiserver on loopback, with the mesh's CRDs installed.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use tempfile::TempDir;
use tokio::time::{Instant, sleep, timeout};

use crate::peers::PeerBinary;
use crate::pki;
use crate::process::ChildGuard;

/// How long the API server may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a CRD may take to become established.
const CRD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("test peer missing: {0}")]
    MissingPeer(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generating the API server's certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("{name} exited during start-up ({status}); log {log}:\n{tail}")]
    PeerExited { name: &'static str, status: String, log: PathBuf, tail: String },
    #[error(
        "kube-apiserver not ready after {seconds}s; last error: {last_error}; log {log}:\n{tail}"
    )]
    NotReady { seconds: u64, last_error: String, log: PathBuf, tail: String },
    #[error("building the kube client: {0}")]
    Client(String),
    #[error("installing CRD from {file}: {reason}")]
    Crd { file: PathBuf, reason: String },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

/// A running etcd + kube-apiserver pair. Dropping it stops both and removes
/// their state.
pub struct KubeHarness {
    client: kube::Client,
    kubeconfig: PathBuf,
    // Field order is drop order: the API server goes before etcd, and the
    // directory holding their state goes last.
    apiserver: ChildGuard,
    etcd: ChildGuard,
    dir: TempDir,
}

impl std::fmt::Debug for KubeHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeHarness")
            .field("kubeconfig", &self.kubeconfig)
            .field("apiserver", &self.apiserver)
            .field("etcd", &self.etcd)
            .finish_non_exhaustive()
    }
}

impl KubeHarness {
    /// Starts etcd and kube-apiserver, waits until the API server is ready and
    /// installs every CRD in `helm/base/crds`.
    pub async fn start() -> Result<Self, HarnessError> {
        let harness = Self::start_bare().await?;
        harness.install_crds(&crd_dir()).await?;
        Ok(harness)
    }

    /// Like [`KubeHarness::start`], without installing any CRD (for tests that
    /// install them another way, such as `helm install`).
    pub async fn start_bare() -> Result<Self, HarnessError> {
        let etcd_bin = PeerBinary::Etcd.path().map_err(HarnessError::MissingPeer)?;
        let apiserver_bin = PeerBinary::KubeApiserver.path().map_err(HarnessError::MissingPeer)?;
        let dir = tempfile::Builder::new()
            .prefix("mesh-kube-")
            .tempdir()
            .map_err(io("creating the harness directory"))?;

        let etcd_client_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let mut etcd = start_etcd(&etcd_bin, dir.path(), etcd_client_port, etcd_peer_port)?;

        let pki = pki::generate()?;
        let token = format!("mesh-test-{}", std::process::id());
        let files = write_apiserver_files(dir.path(), &pki, &token)?;
        let api_port = free_port()?;
        let mut apiserver =
            start_apiserver(&apiserver_bin, dir.path(), &files, api_port, etcd_client_port)?;

        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, api_port, &files.ca, &token)?;
        let client = client_from(&kubeconfig).await?;
        wait_ready(&client, &mut etcd, &mut apiserver).await?;

        Ok(Self { client, kubeconfig, apiserver, etcd, dir })
    }

    /// A client authenticated as a cluster admin (`system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A kubeconfig file for tools such as helm.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The directory holding the peers' state and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Logs of the API server and etcd, for test failure messages.
    pub fn logs(&self) -> [(&'static str, &Path); 2] {
        [(self.apiserver.name(), self.apiserver.log()), (self.etcd.name(), self.etcd.log())]
    }

    /// Creates every CRD found in `dir` (`*.yaml`, one or more documents per
    /// file) and waits until each is established.
    pub async fn install_crds(&self, dir: &Path) -> Result<Vec<String>, HarnessError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let mut names = Vec::new();
        for file in yaml_files(dir)? {
            let crd_err = |reason: String| HarnessError::Crd { file: file.clone(), reason };
            let text = std::fs::read_to_string(&file)
                .map_err(io(format!("reading {}", file.display())))?;
            for document in serde_yaml_ng::Deserializer::from_str(&text) {
                let value: serde_json::Value = serde::Deserialize::deserialize(document)
                    .map_err(|e| crd_err(e.to_string()))?;
                if value.is_null() {
                    continue;
                }
                let crd: CustomResourceDefinition =
                    serde_json::from_value(value).map_err(|e| crd_err(e.to_string()))?;
                let created = api
                    .create(&PostParams::default(), &crd)
                    .await
                    .map_err(|e| crd_err(e.to_string()))?;
                let name = created.metadata.name.unwrap_or_default();
                let established =
                    await_condition(api.clone(), &name, conditions::is_crd_established());
                timeout(CRD_TIMEOUT, established)
                    .await
                    .map_err(|_| crd_err(format!("{name} not established after {CRD_TIMEOUT:?}")))?
                    .map_err(|e| crd_err(e.to_string()))?;
                names.push(name);
            }
        }
        if names.is_empty() {
            return Err(HarnessError::Crd {
                file: dir.to_owned(),
                reason: "no CRDs found".to_owned(),
            });
        }
        Ok(names)
    }
}

/// `helm/base/crds` of this repository.
pub fn crd_dir() -> PathBuf {
    crate::repo_path("helm/base/crds")
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, HarnessError> {
    let entries = std::fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(format!("listing {}", dir.display())))?.path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A currently free loopback port, never the same one twice in this process:
/// tests run concurrently, and the kernel may hand a just-released port to the
/// next `bind(0)`. Another process could still take it before the peer binds
/// it; start-up then fails with the peer's log, not silently.
fn free_port() -> Result<u16, HarnessError> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
        let port = listener.local_addr().map_err(io("finding a free port"))?.port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
}

fn start_etcd(
    bin: &Path,
    dir: &Path,
    client_port: u16,
    peer_port: u16,
) -> Result<ChildGuard, HarnessError> {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new(bin);
    cmd.arg("--name=harness")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=harness={peer_url}"))
        .arg("--log-level=warn")
        // Test data is disposable; skipping fsync makes start-up and writes fast.
        .arg("--unsafe-no-fsync");
    ChildGuard::spawn("etcd", cmd, &dir.join("etcd.log"))
        .map_err(io(format!("starting {}", bin.display())))
}

struct ApiServerFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    service_account_key: PathBuf,
    service_account_public: PathBuf,
    tokens: PathBuf,
}

fn write_apiserver_files(
    dir: &Path,
    pki: &pki::ApiServerPki,
    token: &str,
) -> Result<ApiServerFiles, HarnessError> {
    let files = ApiServerFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("apiserver.crt"),
        key: dir.join("apiserver.key"),
        service_account_key: dir.join("sa.key"),
        service_account_public: dir.join("sa.pub"),
        tokens: dir.join("tokens.csv"),
    };
    let write = |path: &Path, contents: &str| {
        std::fs::write(path, contents).map_err(io(format!("writing {}", path.display())))
    };
    write(&files.ca, &pki.ca_pem)?;
    write(&files.cert, &pki.serving_cert_pem)?;
    write(&files.key, &pki.serving_key_pem)?;
    write(&files.service_account_key, &pki.service_account_key_pem)?;
    write(&files.service_account_public, &pki.service_account_public_pem)?;
    write(&files.tokens, &format!("{token},mesh-admin,mesh-admin,\"system:masters\"\n"))?;
    Ok(files)
}

fn start_apiserver(
    bin: &Path,
    dir: &Path,
    files: &ApiServerFiles,
    port: u16,
    etcd_port: u16,
) -> Result<ChildGuard, HarnessError> {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", dir.join("apiserver-certs").display()))
        .arg(format!("--tls-cert-file={}", files.cert.display()))
        .arg(format!("--tls-private-key-file={}", files.key.display()))
        .arg(format!("--client-ca-file={}", files.ca.display()))
        .arg(format!("--token-auth-file={}", files.tokens.display()))
        .arg("--authorization-mode=Node,RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!("--service-account-key-file={}", files.service_account_public.display()))
        .arg(format!("--service-account-signing-key-file={}", files.service_account_key.display()))
        .arg("--service-cluster-ip-range=10.96.0.0/16")
        .arg("--allow-privileged=true")
        // No kubelets or controllers here: skip what would wait for them.
        .arg("--disable-admission-plugins=ServiceAccount")
        .arg("--endpoint-reconciler-type=none")
        .arg("--v=1");
    ChildGuard::spawn("kube-apiserver", cmd, &dir.join("kube-apiserver.log"))
        .map_err(io(format!("starting {}", bin.display())))
}

fn write_kubeconfig(path: &Path, port: u16, ca: &Path, token: &str) -> Result<(), HarnessError> {
    let config = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: harness
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: harness
  context:
    cluster: harness
    user: admin
    namespace: default
current-context: harness
",
        ca = ca.display()
    );
    std::fs::write(path, config).map_err(io(format!("writing {}", path.display())))
}

async fn client_from(kubeconfig: &Path) -> Result<kube::Client, HarnessError> {
    let file =
        Kubeconfig::read_from(kubeconfig).map_err(|e| HarnessError::Client(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|e| HarnessError::Client(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| HarnessError::Client(e.to_string()))
}

/// Polls `/readyz` until it answers `ok`, failing fast if a peer exits.
async fn wait_ready(
    client: &kube::Client,
    etcd: &mut ChildGuard,
    apiserver: &mut ChildGuard,
) -> Result<(), HarnessError> {
    let started = Instant::now();
    let mut last_error: String;
    loop {
        for peer in [&mut *etcd, &mut *apiserver] {
            if let Some(status) = peer.exited() {
                return Err(HarnessError::PeerExited {
                    name: peer.name(),
                    status,
                    log: peer.log().to_owned(),
                    tail: peer.log_tail(30),
                });
            }
        }
        let request = http::Request::get("/readyz").body(Vec::new());
        match request {
            Ok(request) => match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last_error = format!("readyz answered {body:?}"),
                Err(e) => last_error = e.to_string(),
            },
            Err(e) => last_error = e.to_string(),
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(HarnessError::NotReady {
                seconds: READY_TIMEOUT.as_secs(),
                last_error,
                log: apiserver.log().to_owned(),
                tail: apiserver.log_tail(30),
            });
        }
        sleep(Duration::from_millis(250)).await;
    }
}
