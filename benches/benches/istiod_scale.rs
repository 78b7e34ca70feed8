//! istiod at scale: 10,000 pods, 1,000 Services and 1,000
//! AuthorizationPolicies in 100 namespaces, served to 100 proxies over
//! real delta ADS on loopback.
//!
//! Reports: resident memory of istiod's state (engine snapshot, translated
//! outputs, served views, 100 sessions), time to the first full push to
//! all proxies, and for one pod change the translation time (next to a
//! full retranslation measured in the same run), the time until every
//! proxy holds the change, and the bytes each proxy received for it.
//!
//! `cargo bench -p mesh-benches --bench istiod_scale`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::indexing_slicing,
    reason = "benchmark harness"
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use istiod::engine::Engine;
use istiod::source::kube::object_from_json;
use istiod::source::{Kind, SourceEvent};
use istiod::translate::{Config, translate};
use istiod::xds::{AdsService, ConfigStore};
use mesh_proto::discovery::Node;
use mesh_proto::type_url;
use mesh_xds::client::{Rejection, ResourceHandler, Subscription, Update, XdsClient, XdsConfig};
use mesh_xds::server::Connections;
use serde_json::{Value, json};

const NAMESPACES: usize = 100;
const PODS_PER_NAMESPACE: usize = 100;
const SERVICES_PER_NAMESPACE: usize = 10;
const POLICIES_PER_NAMESPACE: usize = 10;
const PROXIES: usize = 100;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

fn pod(ns: usize, i: usize, ip_suffix: usize) -> Value {
    let app = i % SERVICES_PER_NAMESPACE;
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "namespace": format!("ns-{ns}"),
            "uid": format!("uid-{ns}-{i}"),
            "labels": {"app": format!("app-{app}"), "version": "v1"}},
        "spec": {"nodeName": format!("node-{}", i % 10), "serviceAccountName": format!("sa-{app}"),
            "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": format!("10.{}.{}.{}", ns, i / 250, ip_suffix),
            "podIPs": [{"ip": format!("10.{}.{}.{}", ns, i / 250, ip_suffix)}],
            "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

fn objects() -> Vec<(Kind, Value)> {
    let mut out = Vec::new();
    for ns in 0..NAMESPACES {
        out.push((
            Kind::Namespace,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{ns}"),
                "labels": {"istio.io/dataplane-mode": "ambient"}}}),
        ));
        for i in 0..PODS_PER_NAMESPACE {
            out.push((Kind::Pod, pod(ns, i, i % 250 + 1)));
        }
        for s in 0..SERVICES_PER_NAMESPACE {
            out.push((Kind::Service, json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("svc-{s}"), "namespace": format!("ns-{ns}")},
                "spec": {"clusterIP": format!("10.96.{ns}.{}", s + 1), "selector": {"app": format!("app-{s}")},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            })));
        }
        for p in 0..POLICIES_PER_NAMESPACE {
            out.push((Kind::AuthorizationPolicy, json!({
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": format!("allow-{p}"), "namespace": format!("ns-{ns}")},
                "spec": {"selector": {"matchLabels": {"app": format!("app-{p}")}},
                    "rules": [{"from": [{"source": {"principals": [format!("cluster.local/ns/ns-{ns}/sa/sa-{}", (p + 1) % 10)]}}],
                        "to": [{"operation": {"ports": ["8080"]}}]}]},
            })));
        }
    }
    out
}

/// Counts what one proxy received.
#[derive(Clone, Default)]
struct Counter {
    resources: Arc<Mutex<HashMap<String, usize>>>,
    bytes: Arc<AtomicUsize>,
    responses: Arc<AtomicUsize>,
}

impl ResourceHandler for Counter {
    fn apply(&mut self, updates: Vec<Update>, removals: Vec<String>) -> Vec<Rejection> {
        let mut map = self.resources.lock().unwrap();
        let mut bytes = 0;
        for u in updates {
            bytes += u.resource.value.len() + u.name.len() + u.version.len();
            map.insert(u.name, u.resource.value.len());
        }
        for r in removals {
            bytes += r.len();
            map.remove(&r);
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.responses.fetch_add(1, Ordering::Relaxed);
        Vec::new()
    }
}

async fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?}");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    start.elapsed()
}

fn main() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let cfg = Config::default();
    let generated = objects();
    let rss_start = rss_bytes();

    // Build istiod's state as the engine does from a source's events.
    let mut engine = Engine::new(cfg.clone());
    let started = Instant::now();
    for (kind, value) in generated {
        engine.apply(SourceEvent::Applied(object_from_json(kind, value).unwrap()));
    }
    let store = ConfigStore::new();
    let flush = engine.flush();
    store.apply(flush.resources);
    let initial_translation = started.elapsed();
    let addresses = store.len(type_url::ADDRESS);
    let authorizations = store.len(type_url::AUTHORIZATION);
    let rss_state = rss_bytes();

    // 100 proxies over real gRPC on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Connections::new();
    let ads = AdsService::new(Arc::clone(&store)).with_connections(Arc::clone(&connections));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ads.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let mut proxies = Vec::new();
    let push_started = Instant::now();
    for i in 0..PROXIES {
        let counter = Counter::default();
        let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy();
        let node = Node { id: format!("ztunnel~node-{i}"), ..Node::default() };
        let client = XdsClient::new(channel, XdsConfig::new(node))
            .with_type(type_url::ADDRESS, Subscription::wildcard(), counter.clone())
            .with_type(type_url::AUTHORIZATION, Subscription::wildcard(), Counter::default());
        tokio::spawn(client.run());
        proxies.push(counter);
    }
    let first_push = wait_until(Duration::from_secs(120), || {
        proxies.iter().all(|p| p.resources.lock().unwrap().len() == addresses)
    })
    .await;
    let _ = push_started;
    let rss_served = rss_bytes();

    // One pod changes (its IP): incremental translation vs a full one.
    let full_started = Instant::now();
    let full = translate(&cfg, engine.snapshot());
    let full_translation = full_started.elapsed();
    assert_eq!(full.addresses.len(), addresses);

    let before_bytes: Vec<usize> =
        proxies.iter().map(|p| p.bytes.load(Ordering::Relaxed)).collect();
    let before_responses: Vec<usize> =
        proxies.iter().map(|p| p.responses.load(Ordering::Relaxed)).collect();
    let change_started = Instant::now();
    let changed = object_from_json(Kind::Pod, pod(7, 42, 251)).unwrap();
    engine.apply(SourceEvent::Applied(changed));
    let flush = engine.flush();
    let touched = store.apply(flush.resources);
    let incremental_translation = change_started.elapsed();
    let propagated = wait_until(Duration::from_secs(30), || {
        proxies.iter().zip(&before_responses).all(|(p, b)| p.responses.load(Ordering::Relaxed) > *b)
    })
    .await
        + incremental_translation;
    let per_proxy_bytes: Vec<usize> = proxies
        .iter()
        .zip(&before_bytes)
        .map(|(p, b)| p.bytes.load(Ordering::Relaxed) - b)
        .collect();
    let total_first: usize = before_bytes.iter().sum();

    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!(
        "istiod scale: {} pods, {} services, {} policies, {PROXIES} proxies",
        NAMESPACES * PODS_PER_NAMESPACE,
        NAMESPACES * SERVICES_PER_NAMESPACE,
        NAMESPACES * POLICIES_PER_NAMESPACE
    );
    println!("  resources served: {addresses} addresses, {authorizations} authorizations");
    println!("  initial translation (engine, all objects): {initial_translation:?}");
    println!(
        "  resident memory: state {:.1} MiB ({:.0} B per pod); with {PROXIES} proxy sessions and clients {:.1} MiB",
        mib(rss_state.saturating_sub(rss_start)),
        rss_state.saturating_sub(rss_start) as f64 / (NAMESPACES * PODS_PER_NAMESPACE) as f64,
        mib(rss_served.saturating_sub(rss_start))
    );
    println!(
        "  first full push to {PROXIES} proxies: {first_push:?} ({:.1} MiB of resources in all, {:.1} KiB per proxy)",
        mib(total_first),
        total_first as f64 / PROXIES as f64 / 1024.0
    );
    println!(
        "  one pod change: names touched {:?}",
        touched
            .iter()
            .map(|(t, n)| (t.rsplit('.').next().unwrap_or(t), n.len()))
            .collect::<Vec<_>>()
    );
    println!(
        "    incremental translation {incremental_translation:?} vs full retranslation {full_translation:?} (ratio {:.0}x)",
        full_translation.as_secs_f64() / incremental_translation.as_secs_f64().max(1e-9)
    );
    println!(
        "    change in every proxy after {propagated:?}; bytes per proxy: min {} max {}",
        per_proxy_bytes.iter().min().unwrap(),
        per_proxy_bytes.iter().max().unwrap()
    );
    println!(
        "    vs the first push per proxy: {:.4}% of the bytes",
        100.0 * *per_proxy_bytes.iter().max().unwrap() as f64
            / (total_first as f64 / PROXIES as f64)
    );
    assert_eq!(connections.len(), PROXIES);
}
