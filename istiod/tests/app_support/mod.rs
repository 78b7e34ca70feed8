//! A real xDS client recording what istiod sends, and helpers to read
//! istiod's monitoring port.
#![allow(dead_code, reason = "each test binary uses a part")]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_proto::discovery::Node;
use mesh_proto::type_url;
use mesh_xds::client::{Rejection, ResourceHandler, Subscription, Update, XdsClient, XdsConfig};
use prost_types::Any;
use tonic::transport::Channel;

/// What one type received: current resources, and every response's names.
#[derive(Debug, Default)]
pub(crate) struct Received {
    pub(crate) resources: BTreeMap<String, Any>,
    /// Per response: names updated and names removed.
    pub(crate) responses: Vec<(Vec<String>, Vec<String>)>,
    /// Names to NACK.
    pub(crate) reject: BTreeSet<String>,
}

#[derive(Clone, Default)]
pub(crate) struct Recorder(pub(crate) Arc<Mutex<Received>>);

impl ResourceHandler for Recorder {
    fn apply(&mut self, updates: Vec<Update>, removals: Vec<String>) -> Vec<Rejection> {
        let mut r = self.0.lock().unwrap();
        let mut rejected = Vec::new();
        let names: Vec<String> = updates.iter().map(|u| u.name.clone()).collect();
        for u in updates {
            if r.reject.contains(&u.name) {
                rejected.push(Rejection { name: u.name, reason: "refused by the test".into() });
            } else {
                r.resources.insert(u.name, u.resource);
            }
        }
        for name in &removals {
            r.resources.remove(name);
        }
        r.responses.push((names, removals));
        rejected
    }
}

impl Recorder {
    pub(crate) fn names(&self) -> BTreeSet<String> {
        self.0.lock().unwrap().resources.keys().cloned().collect()
    }

    pub(crate) fn responses(&self) -> usize {
        self.0.lock().unwrap().responses.len()
    }

    /// Names updated or removed by responses after the first `skip`.
    pub(crate) fn changed_since(&self, skip: usize) -> (BTreeSet<String>, BTreeSet<String>) {
        let r = self.0.lock().unwrap();
        let mut updated = BTreeSet::new();
        let mut removed = BTreeSet::new();
        for (u, d) in r.responses.iter().skip(skip) {
            updated.extend(u.iter().cloned());
            removed.extend(d.iter().cloned());
        }
        (updated, removed)
    }
}

/// A wildcard subscriber to Address and Authorization over `channel`.
pub(crate) struct Proxy {
    pub(crate) addresses: Recorder,
    pub(crate) authorizations: Recorder,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn node(id: &str) -> Node {
    Node { id: id.to_owned(), ..Node::default() }
}

pub(crate) fn subscribe(channel: Channel, id: &str, token: Option<String>) -> Proxy {
    let addresses = Recorder::default();
    let authorizations = Recorder::default();
    let mut client = XdsClient::new(channel, XdsConfig::new(node(id)))
        .with_type(type_url::ADDRESS, Subscription::wildcard(), addresses.clone())
        .with_type(type_url::AUTHORIZATION, Subscription::wildcard(), authorizations.clone());
    if let Some(token) = token {
        client = client.with_stream_metadata(move || {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert("authorization", format!("Bearer {token}").parse().unwrap());
            m
        });
    }
    let task = tokio::spawn(client.run());
    Proxy { addresses, authorizations, task }
}

pub(crate) fn plaintext_channel(address: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}")).unwrap().connect_lazy()
}

pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// `GET path` over HTTP/1.1: status and body.
pub(crate) async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    mesh_test_support::http_get(address, path).await.unwrap()
}

pub(crate) async fn get_json(address: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = get(address, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

pub(crate) const POD_CLIENT: &str = "Kubernetes//Pod/demo/client";
pub(crate) const POD_SERVER: &str = "Kubernetes//Pod/demo/server";
pub(crate) const SERVICE: &str = "demo/server.demo.svc.cluster.local";
pub(crate) const POLICY: &str = "demo/server-allow-client";

/// An AuthorizationPolicy whose CIDR is invalid.
pub(crate) const BAD_POLICY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-cidr, namespace: demo}
spec:
  action: DENY
  rules: [{from: [{source: {ipBlocks: ['10.0.0.0/99']}}]}]
";
