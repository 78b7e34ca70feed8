//! istiod in local mode, as a whole: a directory of YAML in, delta xDS out
//! to real xDS clients, edits to files pushed incrementally, bad input
//! reported without disturbing the rest, NACKs survived, and the TLS port
//! authenticating proxies by their node token.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod app_support;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use app_support::*;
use istiod::app::{App, Config};
use mesh_identity::TrustBundle;
use mesh_identity::control_plane;
use mesh_identity::grpc::{self, ControlPlaneTarget};
use mesh_identity::tls::TlsSettings;
use mesh_proto::discovery::DeltaDiscoveryRequest;
use mesh_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::type_url;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

struct Local {
    app: App,
    config_dir: PathBuf,
    state_dir: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Local {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    let state_dir = dir.path().join("state");
    copy_dir(&mesh_test_support::repo_path("istiod/tests/local-config"), &config_dir);
    let (c, s) = (config_dir.to_str().unwrap(), state_dir.to_str().unwrap());
    let config = Config::from_map(&HashMap::from([
        ("LOCAL_CONFIG_DIR", c),
        ("LOCAL_STATE_DIR", s),
        ("LOCAL_NODES", "node-a,node-b"),
        ("GRPC_ADDRESS", "127.0.0.1:0"),
        ("PLAINTEXT_XDS_ADDRESS", "127.0.0.1:0"),
        ("MONITORING_ADDRESS", "127.0.0.1:0"),
        ("PILOT_DEBOUNCE_AFTER", "20"),
    ]))
    .unwrap();
    let app = App::start(config).await.unwrap();
    Local { app, config_dir, state_dir, _dir: dir }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// Rewrites `file` (relative to the config dir) with `f` applied.
fn edit(local: &Local, file: &str, f: impl FnOnce(String) -> String) {
    let path = local.config_dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, f(text)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_becomes_xds_and_edits_are_pushed_as_increments() {
    let local = start().await;
    let monitoring = local.app.monitoring_address;
    let proxy =
        subscribe(plaintext_channel(local.app.plaintext_address.unwrap()), "ztunnel~a", None);
    eventually("the directory's workloads, service and policy", || {
        proxy.addresses.names() == set(&[POD_CLIENT, POD_SERVER, SERVICE])
            && proxy.authorizations.names() == set(&[POLICY])
    })
    .await;
    assert_eq!(get(monitoring, "/ready").await.0, 200);

    // Deleting a pod (its document) removes exactly that workload.
    let seen = proxy.addresses.responses();
    edit(&local, "workloads/pods.yaml", |t| {
        let (_, rest) = t.split_once("---\n").unwrap();
        rest.to_owned()
    });
    eventually("the client pod removed", || !proxy.addresses.names().contains(POD_CLIENT)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.addresses.changed_since(seen), (BTreeSet::new(), set(&[POD_CLIENT])));

    // Editing the policy's rules pushes the policy only.
    let (seen_a, seen_p) = (proxy.addresses.responses(), proxy.authorizations.responses());
    edit(&local, "policy.yaml", |t| t.replace("sa/client", "sa/other"));
    eventually("the policy pushed", || proxy.authorizations.responses() > seen_p).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.authorizations.changed_since(seen_p), (set(&[POLICY]), BTreeSet::new()));
    assert_eq!(proxy.addresses.changed_since(seen_a), (BTreeSet::new(), BTreeSet::new()));

    // Un-enrolling the namespace removes its workloads; no restart.
    let seen = proxy.addresses.responses();
    edit(&local, "namespace.yaml", |t| t.replace("istio.io/dataplane-mode: ambient", "team: x"));
    eventually("the server pod removed", || !proxy.addresses.names().contains(POD_SERVER)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, removed) = proxy.addresses.changed_since(seen);
    assert_eq!(removed, set(&[POD_SERVER]));
    assert_eq!(proxy.addresses.names(), set(&[SERVICE]));

    // syncz reports this proxy in sync, and config_dump?proxyID its view.
    let syncz = get_json(monitoring, "/debug/syncz").await;
    let me = syncz.as_array().unwrap().iter().find(|p| p["proxy"] == "ztunnel~a").unwrap();
    assert_eq!(me["types"]["istio.workload.Address"]["synced"], true, "{syncz}");
    let dump = get_json(monitoring, "/debug/config_dump?proxyID=ztunnel%7Ea").await;
    assert!(dump["resources"]["istio.security.Authorization"][POLICY].is_string(), "{dump}");
    let all = get_json(monitoring, "/debug/config_dump").await;
    assert!(all["resources"]["istio.workload.Address"][SERVICE].is_string(), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_reported_and_leaves_the_mesh_untouched() {
    let local = start().await;
    let monitoring = local.app.monitoring_address;
    let proxy =
        subscribe(plaintext_channel(local.app.plaintext_address.unwrap()), "ztunnel~a", None);
    eventually("initial config", || proxy.authorizations.names() == set(&[POLICY])).await;
    let before = proxy.addresses.names();

    // An invalid CIDR: a condition on the object, nothing served for it.
    std::fs::write(local.config_dir.join("bad-policy.yaml"), BAD_POLICY).unwrap();
    // A YAML syntax error in another file: that file is refused whole.
    std::fs::write(local.config_dir.join("broken.yaml"), "kind: Pod\nmetadata: {name: [\n")
        .unwrap();
    // An unknown kind.
    std::fs::write(
        local.config_dir.join("unknown.yaml"),
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: demo}\n",
    )
    .unwrap();
    let mut errors = serde_json::Value::Null;
    for _ in 0..200 {
        errors = get_json(monitoring, "/debug/config_errors").await;
        if errors["objects"].as_array().is_some_and(|o| !o.is_empty())
            && errors["files"].as_array().is_some_and(|f| f.len() >= 2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let objects = errors["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{errors}");
    assert_eq!(objects[0]["object"], "AuthorizationPolicy demo/bad-cidr");
    assert_eq!(objects[0]["conditions"][0]["reason"], "InvalidValue");
    let files = errors["files"].to_string();
    assert!(files.contains("broken.yaml") && files.contains("unknown.yaml"), "{files}");
    assert!(files.contains("Widget"), "{files}");
    let metrics = get(monitoring, "/metrics").await.1;
    assert!(metrics.contains("istiod_config_errors 1"), "{metrics}");

    // The invalid policy is served fail closed (an ALLOW matching nothing).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.authorizations.names(), set(&[POLICY, "demo/bad-cidr"]));
    assert_eq!(proxy.addresses.names(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_is_recorded_and_pushes_go_on_for_everyone() {
    let local = start().await;
    let monitoring = local.app.monitoring_address;
    let channel = plaintext_channel(local.app.plaintext_address.unwrap());
    let good = subscribe(channel.clone(), "ztunnel~good", None);
    let picky = subscribe(channel, "ztunnel~picky", None);
    picky.authorizations.0.lock().unwrap().reject.insert(POLICY.to_owned());
    eventually("both proxies served", || {
        good.authorizations.names() == set(&[POLICY]) && picky.addresses.names().len() == 3
    })
    .await;

    let mut syncz = serde_json::Value::Null;
    for _ in 0..200 {
        syncz = get_json(monitoring, "/debug/syncz").await;
        let nack = syncz.as_array().unwrap().iter().find(|p| p["proxy"] == "ztunnel~picky");
        if nack.is_some_and(|p| p["types"]["istio.security.Authorization"]["last_nack"].is_object())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let picky_sync =
        syncz.as_array().unwrap().iter().find(|p| p["proxy"] == "ztunnel~picky").unwrap();
    let nack = &picky_sync["types"]["istio.security.Authorization"]["last_nack"];
    assert!(nack["message"].as_str().unwrap().contains("refused by the test"), "{syncz}");
    let metrics = get(monitoring, "/metrics").await.1;
    assert!(
        metrics.contains("pilot_total_xds_rejects_total{type=\"authorization\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("pilot_xds 2"), "{metrics}");

    // The server stays healthy: a new pod reaches both proxies.
    edit(&local, "workloads/pods.yaml", |t| t.replace("name: client\n", "name: client2\n"));
    for proxy in [&good, &picky] {
        eventually("the renamed pod", || {
            proxy.addresses.names().contains("Kubernetes//Pod/demo/client2")
        })
        .await;
    }
    assert_eq!(get(monitoring, "/ready").await.0, 200);
}

fn tls_channel(local: &Local) -> tonic::transport::Channel {
    let bundle = std::fs::read(local.state_dir.join("root-cert.pem")).unwrap();
    let target = ControlPlaneTarget {
        address: local.app.grpc_address,
        hostname: "istiod.istio-system.svc".to_owned(),
        trust: Arc::new(TrustBundle::from_pem(&bundle).unwrap()),
        connect_timeout: Duration::from_secs(5),
    };
    grpc::connect(target, control_plane::client_context(TlsSettings::default()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_port_serves_xds_only_to_authenticated_proxies() {
    let local = start().await;
    let token_path = local.state_dir.join("node-tokens/node-a");
    let token = std::fs::read_to_string(token_path).unwrap().trim().to_owned();

    // No token: refused before any stream opens.
    let mut raw = AggregatedDiscoveryServiceClient::new(tls_channel(&local));
    let request = DeltaDiscoveryRequest {
        type_url: type_url::ADDRESS.to_owned(),
        node: Some(node("ztunnel~anon")),
        ..Default::default()
    };
    let refused = raw.delta_aggregated_resources(tokio_stream::iter(vec![request.clone()])).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
    // A wrong token: refused too.
    let mut wrong = tonic::Request::new(tokio_stream::iter(vec![request]));
    wrong
        .metadata_mut()
        .insert("authorization", format!("Bearer {}", "0".repeat(64)).parse().unwrap());
    let refused = raw.delta_aggregated_resources(wrong).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);

    // The node's token: served.
    let proxy = subscribe(tls_channel(&local), "ztunnel~node-a", Some(token));
    eventually("config over TLS", || {
        proxy.addresses.names() == set(&[POD_CLIENT, POD_SERVER, SERVICE])
    })
    .await;
}

/// Many pods, so one response exceeds a small HTTP/2 receive window.
fn many_pods(count: usize) -> String {
    let mut out = String::new();
    for i in 0..count {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: bulk-{i}, namespace: demo, labels: {{app: bulk}}}}\n\
             spec: {{nodeName: node-a, containers: [{{name: c}}]}}\n\
             status: {{phase: Running, podIP: 10.250.{}.{}, podIPs: [{{ip: 10.250.{}.{}}}]}}\n",
            i / 250,
            i % 250 + 1,
            i / 250,
            i % 250 + 1
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_stops_reading_does_not_hold_back_the_others() {
    let local = start().await;
    std::fs::write(local.config_dir.join("bulk.yaml"), many_pods(2000)).unwrap();
    let address = local.app.plaintext_address.unwrap();

    // A proxy with a 64 KiB window that never reads its responses.
    let slow_channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect_lazy();
    let (requests, rx) = tokio::sync::mpsc::channel(4);
    requests
        .send(DeltaDiscoveryRequest {
            type_url: type_url::ADDRESS.to_owned(),
            node: Some(node("ztunnel~stuck")),
            resource_names_subscribe: vec!["*".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut raw = AggregatedDiscoveryServiceClient::new(slow_channel);
    let _stuck = raw
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();

    let proxy = subscribe(plaintext_channel(address), "ztunnel~fast", None);
    eventually("the bulk pods at the fast proxy", || proxy.addresses.names().len() == 2003).await;

    // Changes keep reaching the fast proxy while the stuck one is blocked.
    for round in 0..6 {
        edit(&local, "bulk.yaml", |t| {
            t.replace(&format!("name: bulk-{round},"), &format!("name: moved-{round},"))
        });
        let moved = format!("Kubernetes//Pod/demo/moved-{round}");
        eventually("a change at the fast proxy", || proxy.addresses.names().contains(&moved)).await;
    }
    // The stuck stream's driver waits on its transport instead of queueing
    // responses: the latest changes were never computed for it.
    let dump =
        get_json(local.app.monitoring_address, "/debug/config_dump?proxyID=ztunnel%7Estuck").await;
    let sent = &dump["resources"]["istio.workload.Address"];
    assert!(sent.is_object(), "{dump}");
    assert!(sent.get("Kubernetes//Pod/demo/moved-5").is_none(), "stuck proxy was sent the latest");
    let fast =
        get_json(local.app.monitoring_address, "/debug/config_dump?proxyID=ztunnel%7Efast").await;
    assert!(
        fast["resources"]["istio.workload.Address"]["Kubernetes//Pod/demo/moved-5"].is_string()
    );
    drop(requests);
}
