//! Writing translation conditions back to the objects' `status`.
//!
//! Only the leader (see [`lease`]) writes. It keeps the conditions of type
//! `Accepted` as the engine last computed them for every object and writes
//! an object when they change, and everything again when it becomes leader
//! (another replica may have led while these changed). Other writers'
//! conditions on the same object are kept. Only the Istio CRD kinds carry
//! conditions from us; for the core kinds the problem goes to the log and
//! to `istiod_config_errors`.

pub mod lease;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::engine::StatusChanges;
use crate::source::kube::api_resource;
use crate::source::{Kind, ObjectRef};
use crate::translate::status::{CONDITION_ACCEPTED, Condition};

/// Whether we write conditions on objects of this kind.
pub fn writes_status(kind: Kind) -> bool {
    kind.group().ends_with("istio.io")
}

/// The new `status.conditions`: everything of other types as it is, then
/// ours (none when `ours` is empty).
pub fn merged_conditions(existing: Option<&Value>, ours: &[Condition], now: &str) -> Vec<Value> {
    let mut out: Vec<Value> = existing
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|c| c.get("type").and_then(Value::as_str) != Some(CONDITION_ACCEPTED))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let previous: Vec<&Value> = existing
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter(|c| c.get("type").and_then(Value::as_str) == Some(CONDITION_ACCEPTED))
                .collect()
        })
        .unwrap_or_default();
    // One condition of a type, as Kubernetes expects: several problems of
    // one object are joined into one message.
    if let Some(first) = ours.first() {
        let status = if ours.iter().any(|c| c.status == "False") { "False" } else { "True" };
        let reason =
            ours.iter().find(|c| c.status == status).map_or(first.reason.as_str(), |c| &c.reason);
        let message = ours.iter().map(|c| c.message.as_str()).collect::<Vec<_>>().join("; ");
        let unchanged = previous.first().is_some_and(|p| {
            p.get("status").and_then(Value::as_str) == Some(status)
                && p.get("reason").and_then(Value::as_str) == Some(reason)
                && p.get("message").and_then(Value::as_str) == Some(message.as_str())
        });
        let since = if unchanged {
            previous
                .first()
                .and_then(|p| p.get("lastTransitionTime"))
                .and_then(Value::as_str)
                .unwrap_or(now)
                .to_owned()
        } else {
            now.to_owned()
        };
        out.push(json!({
            "type": CONDITION_ACCEPTED,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": since,
        }));
    }
    out
}

async fn write_one(
    client: &Client,
    reference: &ObjectRef,
    ours: &[Condition],
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &reference.key.namespace,
        &api_resource(reference.kind),
    );
    let Some(object) = api.get_opt(&reference.key.name).await? else { return Ok(()) };
    let existing = object.data.get("status").and_then(|s| s.get("conditions"));
    let now = Timestamp::now().to_string();
    let mut conditions = merged_conditions(existing, ours, &now);
    if let Some(generation) = object.metadata.generation {
        for c in &mut conditions {
            if c.get("type").and_then(Value::as_str) == Some(CONDITION_ACCEPTED)
                && let Some(fields) = c.as_object_mut()
            {
                fields.insert("observedGeneration".to_owned(), json!(generation));
            }
        }
    }
    let unchanged = match existing.and_then(Value::as_array) {
        Some(list) => *list == conditions,
        None => conditions.is_empty(),
    };
    if unchanged {
        return Ok(());
    }
    let patch = json!({ "status": { "conditions": conditions } });
    api.patch_status(&reference.key.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Writes status changes while this replica leads; rewrites everything
/// `current` holds whenever leadership is (re)gained. Failed writes are
/// retried on the next change or after `retry`.
pub async fn run_writer(
    client: Client,
    mut changes: mpsc::UnboundedReceiver<StatusChanges>,
    mut leading: watch::Receiver<bool>,
    current: impl Fn() -> BTreeMap<ObjectRef, Vec<Condition>> + Send + 'static,
    retry: std::time::Duration,
) {
    let mut pending: BTreeMap<ObjectRef, Vec<Condition>> = BTreeMap::new();
    // Objects that once had conditions from us, so clearing them is written.
    let mut touched: BTreeSet<ObjectRef> = BTreeSet::new();
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else { return };
                for (reference, conditions) in change {
                    if writes_status(reference.kind) {
                        pending.insert(reference, conditions);
                    }
                }
            }
            changed = leading.changed() => {
                if changed.is_err() {
                    return;
                }
                if *leading.borrow_and_update() {
                    let now = current();
                    for reference in touched.iter().filter(|r| !now.contains_key(*r)) {
                        pending.insert(reference.clone(), Vec::new());
                    }
                    for (reference, conditions) in now {
                        if writes_status(reference.kind) {
                            pending.insert(reference, conditions);
                        }
                    }
                }
            }
            () = tokio::time::sleep(retry), if !pending.is_empty() => {}
        }
        if !*leading.borrow() {
            continue;
        }
        let batch = std::mem::take(&mut pending);
        for (reference, conditions) in batch {
            match write_one(&client, &reference, &conditions).await {
                Ok(()) => {
                    if conditions.is_empty() {
                        touched.remove(&reference);
                    } else {
                        touched.insert(reference);
                    }
                }
                Err(e) => {
                    tracing::warn!(object = %reference, error = %e, "writing status failed; will retry");
                    pending.insert(reference, conditions);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_condition_replaces_only_our_type_and_keeps_its_transition_time() {
        let existing = json!([
            {"type": "WaypointAccepted", "status": "True", "reason": "x", "message": ""},
            {"type": "Accepted", "status": "False", "reason": "InvalidValue", "message": "bad cidr",
             "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]);
        let bad = vec![Condition::rejected("InvalidValue", "bad cidr")];
        let merged = merged_conditions(Some(&existing), &bad, "2026-02-02T00:00:00Z");
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0]["type"], "WaypointAccepted");
        assert_eq!(merged[1]["lastTransitionTime"], "2026-01-01T00:00:00Z");

        let merged = merged_conditions(Some(&existing), &[], "2026-02-02T00:00:00Z");
        assert_eq!(merged, vec![existing[0].clone()]);

        let two = vec![
            Condition::accepted_with_warning("UnsupportedValue", "L7 rule dropped"),
            Condition::rejected("InvalidValue", "bad port"),
        ];
        let merged = merged_conditions(None, &two, "now");
        assert_eq!(merged[0]["status"], "False");
        assert_eq!(merged[0]["reason"], "InvalidValue");
        assert_eq!(merged[0]["message"], "L7 rule dropped; bad port");
        assert_eq!(merged[0]["lastTransitionTime"], "now");
    }

    #[test]
    fn only_istio_kinds_get_status_from_us() {
        assert!(writes_status(Kind::AuthorizationPolicy));
        assert!(writes_status(Kind::ServiceEntry));
        assert!(!writes_status(Kind::Service));
        assert!(!writes_status(Kind::HttpRoute));
    }
}
