//! `/debug/*` on the monitoring port: what each proxy was sent and
//! acknowledged (`syncz`), the served configuration (`config_dump`, all or
//! `?proxyID=<node id>`), and configuration problems (`config_errors`).

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_telemetry::admin::query_param;
use mesh_xds::server::{Connections, Session, ViewSource, lock};
use serde_json::{Value, json};

use crate::engine::EngineHandle;
use crate::xds::ConfigStore;

/// Extra problems to list under `config_errors` (local mode: files that do
/// not parse), produced on demand.
pub type ExtraErrors = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// What the debug endpoints read.
#[derive(Clone)]
pub struct DebugState {
    pub store: Arc<ConfigStore>,
    pub connections: Arc<Connections>,
    pub engine: EngineHandle,
    pub extra_errors: Option<ExtraErrors>,
}

fn short(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

fn session_sync(session: &Session) -> Value {
    let mut types = BTreeMap::new();
    for type_url in session.type_urls() {
        let Some(status) = session.status(type_url) else { continue };
        types.insert(
            short(type_url).to_owned(),
            json!({
                "wildcard": status.wildcard,
                "subscribed_names": status.names.len(),
                "resources_sent": status.sent.len(),
                "synced": status.pending_nonce.is_none() && status.last_nack.is_none(),
                "pending_nonce": status.pending_nonce,
                "acked_nonce": status.acked_nonce,
                "last_nack": status.last_nack.as_ref().map(|(nonce, message)| {
                    json!({"nonce": nonce, "message": message})
                }),
            }),
        );
    }
    json!({ "proxy": session.node().map(|n| n.id.clone()).unwrap_or_default(), "types": types })
}

fn session_dump(session: &Session) -> Value {
    let mut types = BTreeMap::new();
    for type_url in session.type_urls() {
        if let Some(status) = session.status(type_url) {
            types.insert(short(type_url).to_owned(), json!(status.sent));
        }
    }
    json!({ "proxy": session.node().map(|n| n.id.clone()).unwrap_or_default(), "resources": types })
}

impl std::fmt::Debug for DebugState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugState")
            .field("proxies", &self.connections.len())
            .field("generation", &self.store.generation())
            .finish_non_exhaustive()
    }
}

impl DebugState {
    /// The handler for `mesh_telemetry::admin::AdminState::debug`.
    pub fn handle(&self, name: &str, query: &str) -> Option<Value> {
        match name {
            "syncz" => Some(Value::Array(
                self.connections
                    .sessions_snapshot()
                    .iter()
                    .map(|(_, s)| session_sync(&lock(s)))
                    .collect(),
            )),
            "config_dump" => Some(match query_param(query, "proxyID") {
                Some(proxy) => {
                    let found = self.connections.sessions_snapshot().iter().find_map(|(_, s)| {
                        let session = lock(s);
                        (session.node().map(|n| n.id.as_str()) == Some(proxy.as_str()))
                            .then(|| session_dump(&session))
                    });
                    found.unwrap_or_else(
                        || json!({ "error": format!("no proxy {proxy} connected") }),
                    )
                }
                None => self.dump_all(),
            }),
            "config_errors" => Some(self.config_errors()),
            _ => None,
        }
    }

    fn dump_all(&self) -> Value {
        let mut types = BTreeMap::new();
        for type_url in [mesh_proto::type_url::ADDRESS, mesh_proto::type_url::AUTHORIZATION] {
            let view = self.store.view(None, type_url);
            let versions: BTreeMap<&String, &String> =
                view.iter().map(|(name, r)| (name, &r.version)).collect();
            types.insert(short(type_url).to_owned(), json!(versions));
        }
        json!({ "generation": self.store.generation(), "resources": types })
    }

    fn config_errors(&self) -> Value {
        let objects: Vec<Value> = self
            .engine
            .current_statuses()
            .iter()
            .map(|(reference, conditions)| {
                json!({
                    "object": reference.to_string(),
                    "conditions": conditions.iter().map(|c| json!({
                        "type": c.type_, "status": c.status, "reason": c.reason, "message": c.message,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let files = self.extra_errors.as_ref().map(|f| f()).unwrap_or_default();
        json!({ "objects": objects, "files": files })
    }
}
