//! The config istiod reads: a copy of the user's directory where each Pod
//! that runs has `status.phase: Running` and its IP, and each Service
//! without a `clusterIP` gets one from 10.96.0.0/16. Files are rewritten
//! only when their content changes (renamed into place, so istiod never
//! reads half a file), and files gone from the user's directory are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use super::error::Error;
use super::manifest::Manifests;

/// Cluster IPs handed to Services that have none; stable while running.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ServiceIps {
    assigned: BTreeMap<String, Ipv4Addr>,
}

/// The first address handed out (below it: the DNS address and room for
/// users' own clusterIPs).
const FIRST: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 1);
const LAST: Ipv4Addr = Ipv4Addr::new(10, 96, 255, 254);

impl ServiceIps {
    /// Assigns an address to every Service of `manifests` without one.
    pub(crate) fn assign(&mut self, manifests: &Manifests) {
        let wanted: BTreeSet<String> = manifests
            .services
            .iter()
            .filter(|s| s.cluster_ip.is_none())
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect();
        self.assigned.retain(|key, _| wanted.contains(key));
        let taken: BTreeSet<Ipv4Addr> = manifests
            .services
            .iter()
            .filter_map(|s| s.cluster_ip.as_deref()?.parse().ok())
            .chain(self.assigned.values().copied())
            .collect();
        let mut free = (u32::from(FIRST)..=u32::from(LAST))
            .map(Ipv4Addr::from)
            .filter(|ip| !taken.contains(ip));
        for key in wanted {
            if !self.assigned.contains_key(&key)
                && let Some(ip) = free.next()
            {
                self.assigned.insert(key, ip);
            }
        }
    }

    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        self.assigned.get(&format!("{namespace}/{name}")).copied()
    }
}

/// What the generated copy adds.
#[derive(Debug)]
pub(crate) struct Additions<'a> {
    /// `namespace/name` -> IP of every pod that runs.
    pub(crate) pod_ips: &'a BTreeMap<String, Ipv4Addr>,
    pub(crate) service_ips: &'a ServiceIps,
    /// `namespace/name` of pods with a container that is not running:
    /// their `Ready` condition is `False`, so istiod marks them unhealthy.
    pub(crate) unready: &'a BTreeSet<String>,
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn meta(value: &Value, field: &str) -> Option<String> {
    value.get("metadata")?.get(field)?.as_str().map(str::to_owned)
}

/// Adds status to Pods and cluster IPs to Services; `false` drops the
/// object (a Pod that does not run: istiod would see it without an IP).
fn augment(value: &mut Value, add: &Additions<'_>) -> bool {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    let name = meta(value, "name").unwrap_or_default();
    let namespace = meta(value, "namespace").unwrap_or_else(|| "default".into());
    match kind.as_str() {
        "List" => {
            if let Some(items) = value.get_mut("items").and_then(Value::as_sequence_mut) {
                items.retain_mut(|item| augment(item, add));
            }
            true
        }
        "Pod" => {
            let key = format!("{namespace}/{name}");
            let Some(ip) = add.pod_ips.get(&key) else { return false };
            let Some(map) = value.as_mapping_mut() else { return false };
            let mut status = Mapping::new();
            status.insert(text("phase"), text("Running"));
            status.insert(text("podIP"), text(&ip.to_string()));
            let mut entry = Mapping::new();
            entry.insert(text("ip"), text(&ip.to_string()));
            status.insert(text("podIPs"), Value::Sequence(vec![Value::Mapping(entry)]));
            let mut ready = Mapping::new();
            ready.insert(text("type"), text("Ready"));
            let is_ready = if add.unready.contains(&key) { "False" } else { "True" };
            ready.insert(text("status"), text(is_ready));
            status.insert(text("conditions"), Value::Sequence(vec![Value::Mapping(ready)]));
            map.insert(text("status"), Value::Mapping(status));
            true
        }
        "Service" => {
            if let Some(ip) = add.service_ips.get(&namespace, &name)
                && let Some(spec) = value.get_mut("spec").and_then(Value::as_mapping_mut)
            {
                spec.insert(text("clusterIP"), text(&ip.to_string()));
                spec.insert(text("clusterIPs"), Value::Sequence(vec![text(&ip.to_string())]));
            }
            true
        }
        _ => true,
    }
}

/// Renders every file of the generated copy (relative path -> text).
pub(crate) fn render(
    manifests: &Manifests,
    add: &Additions<'_>,
) -> Result<BTreeMap<PathBuf, String>, Error> {
    let mut out = BTreeMap::new();
    for file in &manifests.files {
        let mut docs = Vec::new();
        for doc in &file.documents {
            let mut doc = doc.clone();
            if augment(&mut doc, add) {
                let yaml = serde_yaml_ng::to_string(&doc).map_err(|e| Error::Json {
                    path: file.relative.clone(),
                    message: format!("rendering the generated copy: {e}"),
                })?;
                docs.push(yaml);
            }
        }
        out.insert(file.relative.clone(), docs.join("---\n"));
    }
    Ok(out)
}

/// Makes `dir` hold exactly `files`; returns whether anything changed.
pub(crate) fn write(dir: &Path, files: &BTreeMap<PathBuf, String>) -> Result<bool, Error> {
    let mut changed = false;
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    for (relative, content) in files {
        let path = dir.join(relative);
        if std::fs::read_to_string(&path).is_ok_and(|old| &old == content) {
            continue;
        }
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // Hidden: istiod's source skips it until it is renamed into place.
        let tmp = parent.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).map_err(Error::io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io("renaming into", &path))?;
        changed = true;
    }
    let mut existing = Vec::new();
    list_files(dir, dir, &mut existing);
    for relative in existing {
        if !files.contains_key(&relative) {
            let path = dir.join(&relative);
            std::fs::remove_file(&path).map_err(Error::io("removing", &path))?;
            changed = true;
        }
    }
    Ok(changed)
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            list_files(root, &path, out);
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push(relative.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests(yaml: &str) -> Manifests {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("all.yaml"), yaml).unwrap();
        super::super::manifest::load(dir.path()).unwrap()
    }

    const CONFIG: &str = "apiVersion: v1
kind: Pod
metadata: {name: a, namespace: demo}
spec: {nodeName: n, containers: [{name: c, command: [sleep, '1']}]}
---
apiVersion: v1
kind: Pod
metadata: {name: gone, namespace: demo}
spec: {nodeName: n, containers: [{name: c, command: [sleep, '1']}]}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: demo}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: fixed, namespace: demo}
spec: {clusterIP: 10.96.1.1, ports: [{port: 80}]}
";

    #[test]
    fn pods_get_status_and_services_an_address() {
        let m = manifests(CONFIG);
        let mut ips = ServiceIps::default();
        ips.assign(&m);
        assert_eq!(ips.get("demo", "s"), Some(Ipv4Addr::new(10, 96, 1, 2)), "10.96.1.1 is taken");
        assert_eq!(ips.get("demo", "fixed"), None);
        let pod_ips = BTreeMap::from([("demo/a".to_owned(), Ipv4Addr::new(10, 244, 0, 2))]);
        let unready = BTreeSet::new();
        let add = Additions { pod_ips: &pod_ips, service_ips: &ips, unready: &unready };
        let files = render(&m, &add).unwrap();
        let text = &files[&PathBuf::from("all.yaml")];
        assert!(text.contains("podIP: 10.244.0.2"), "{text}");
        assert!(text.contains("phase: Running"), "{text}");
        assert!(text.contains("type: Ready\n    status: 'True'"), "{text}");
        assert!(!text.contains("name: gone"), "a pod that does not run is left out: {text}");
        assert!(text.contains("clusterIP: 10.96.1.2"), "{text}");

        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("stale.yaml"), "x").unwrap();
        assert!(write(out.path(), &files).unwrap());
        assert!(!out.path().join("stale.yaml").exists());
        assert!(!write(out.path(), &files).unwrap(), "unchanged: nothing written");

        let unready = BTreeSet::from(["demo/a".to_owned()]);
        let add = Additions { pod_ips: &pod_ips, service_ips: &ips, unready: &unready };
        let text = &render(&m, &add).unwrap()[&PathBuf::from("all.yaml")];
        assert!(text.contains("type: Ready\n    status: 'False'"), "{text}");
    }

    #[test]
    fn addresses_are_stable_while_services_come_and_go() {
        let mut ips = ServiceIps::default();
        ips.assign(&manifests(CONFIG));
        let before = ips.get("demo", "s");
        let more = format!(
            "{CONFIG}---\napiVersion: v1\nkind: Service\nmetadata: {{name: b, namespace: demo}}\nspec: {{ports: [{{port: 1}}]}}\n"
        );
        ips.assign(&manifests(&more));
        assert_eq!(ips.get("demo", "s"), before);
        assert_eq!(ips.get("demo", "b"), Some(Ipv4Addr::new(10, 96, 1, 3)));
    }
}
