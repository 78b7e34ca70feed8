//! Reading the user's directory of Kubernetes YAML: the same files istiod's
//! local source reads (`.yaml`, `.yml`, `.json`, recursively, hidden files
//! skipped, `---` separated documents, `v1` `List`s expanded). ambientctl
//! needs only Pods (to run them), Namespaces (their labels) and Services
//! (to give them a cluster IP); every other kind is checked to be one
//! istiod knows and passed through untouched. istiod validates the rest.
//!
//! Errors name the file, the document and the object.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, Service};
use mesh_model::enrolment;
use serde_yaml_ng::Value;

/// Kinds istiod's local source reads or accepts and ignores.
const KNOWN_KINDS: &[&str] = &[
    "Namespace",
    "Node",
    "Pod",
    "Service",
    "EndpointSlice",
    "AuthorizationPolicy",
    "PeerAuthentication",
    "ServiceEntry",
    "WorkloadEntry",
    "RequestAuthentication",
    "Gateway",
    "GatewayClass",
    "HTTPRoute",
    "GRPCRoute",
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "LimitRange",
    "ResourceQuota",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "Ingress",
    "HorizontalPodAutoscaler",
    "CustomResourceDefinition",
    "ReferenceGrant",
    "TCPRoute",
    "TLSRoute",
];

/// Pod fields a container's `env[].valueFrom.fieldRef` may name.
const FIELD_REFS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
];

/// One problem: the file, the document (1-based), the object, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestError {
    pub(crate) file: PathBuf,
    pub(crate) document: Option<usize>,
    pub(crate) object: Option<String>,
    pub(crate) problem: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(doc) = self.document {
            write!(f, " document {doc}")?;
        }
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnvValue {
    Literal(String),
    /// A pod field (one of [`FIELD_REFS`]).
    Field(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerDef {
    pub(crate) name: String,
    /// `command` followed by `args`.
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, EnvValue)>,
    pub(crate) working_dir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodDef {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) node: String,
    pub(crate) service_account: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) containers: Vec<ContainerDef>,
    pub(crate) restart: RestartPolicy,
}

impl PodDef {
    pub(crate) fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceDef {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) cluster_ip: Option<String>,
}

/// One file's documents (empty ones dropped), by path relative to the directory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SourceFile {
    pub(crate) relative: PathBuf,
    pub(crate) documents: Vec<Value>,
}

/// Everything read from the directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Manifests {
    pub(crate) files: Vec<SourceFile>,
    pub(crate) pods: Vec<PodDef>,
    pub(crate) services: Vec<ServiceDef>,
    /// Namespace name -> labels.
    pub(crate) namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl Manifests {
    /// The distinct `spec.nodeName`s, sorted.
    pub(crate) fn nodes(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.pods.iter().map(|p| &p.node).collect();
        set.into_iter().cloned().collect()
    }

    pub(crate) fn pod(&self, namespace: &str, name: &str) -> Option<&PodDef> {
        self.pods.iter().find(|p| p.namespace == namespace && p.name == name)
    }

    /// Whether a pod is in the ambient mesh, by the rule istiod and the CNI
    /// agent share (`mesh_model::enrolment`): its `istio.io/dataplane-mode`
    /// label, else its namespace's, must be `ambient`, and a pod with a
    /// sidecar stays out. Local pods always get an address.
    pub(crate) fn ambient(&self, pod: &PodDef) -> bool {
        fn mode(labels: &BTreeMap<String, String>) -> Option<&str> {
            labels.get(enrolment::DATAPLANE_MODE_LABEL).map(String::as_str)
        }
        let facts = enrolment::PodFacts {
            pod_mode: mode(&pod.labels),
            namespace_mode: self.namespaces.get(&pod.namespace).and_then(mode),
            sidecar: pod.annotations.contains_key(enrolment::SIDECAR_STATUS_ANNOTATION)
                || pod.containers.iter().any(|c| c.name == enrolment::SIDECAR_CONTAINER),
            host_network: false,
            finished: false,
            has_ip: true,
        };
        enrolment::decide(&facts) == enrolment::Enrolment::Enrolled
    }
}

/// Reads and checks every manifest under `dir`; all problems at once.
pub(crate) fn load(dir: &Path) -> Result<Manifests, Vec<ManifestError>> {
    let mut errors = Vec::new();
    let mut paths = Vec::new();
    if let Err(e) = walk(dir, &mut paths) {
        errors.push(e);
    }
    paths.sort();
    let mut manifests = Manifests::default();
    for path in paths {
        let relative = path.strip_prefix(dir).unwrap_or(&path).to_owned();
        match std::fs::read_to_string(&path) {
            Ok(text) => read_file(&path, relative, &text, &mut manifests, &mut errors),
            Err(e) => errors.push(file_error(&path, format!("cannot read: {e}"))),
        }
    }
    let mut seen = BTreeSet::new();
    for pod in &manifests.pods {
        if !seen.insert(pod.key()) {
            errors.push(ManifestError {
                file: dir.to_owned(),
                document: None,
                object: Some(format!("Pod {}", pod.key())),
                problem: "defined more than once".into(),
            });
        }
    }
    if errors.is_empty() { Ok(manifests) } else { Err(errors) }
}

fn file_error(path: &Path, problem: String) -> ManifestError {
    ManifestError { file: path.to_owned(), document: None, object: None, problem }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| file_error(dir, format!("cannot read directory: {e}")))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            if !is_link {
                walk(&path, out)?;
            }
        } else if [".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext)) {
            out.push(path);
        }
    }
    Ok(())
}

fn read_file(
    path: &Path,
    relative: PathBuf,
    text: &str,
    manifests: &mut Manifests,
    errors: &mut Vec<ManifestError>,
) {
    let mut documents = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = index + 1;
        let value = match <Value as serde::Deserialize>::deserialize(doc) {
            Ok(Value::Null) => continue,
            Ok(value) => value,
            Err(e) => {
                let problem = format!("YAML syntax error: {e}");
                errors.push(ManifestError {
                    file: path.to_owned(),
                    document: Some(document),
                    object: None,
                    problem,
                });
                break;
            }
        };
        let at = |object: Option<String>, problem: String| ManifestError {
            file: path.to_owned(),
            document: Some(document),
            object,
            problem,
        };
        if value.get("kind").and_then(Value::as_str) == Some("List") {
            match value.get("items").and_then(Value::as_sequence) {
                Some(items) => {
                    for item in items {
                        if let Err(e) = read_object(item, manifests) {
                            errors.push(at(e.0, e.1));
                        }
                    }
                }
                None => errors.push(at(Some("List".into()), "items: Required value".into())),
            }
        } else if let Err(e) = read_object(&value, manifests) {
            errors.push(at(e.0, e.1));
        }
        documents.push(value);
    }
    manifests.files.push(SourceFile { relative, documents });
}

/// An object problem: the object's description (if known) and what.
type ObjectError = (Option<String>, String);

fn read_object(value: &Value, manifests: &mut Manifests) -> Result<(), ObjectError> {
    if !value.is_mapping() {
        return Err((None, "the document is not a mapping".into()));
    }
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .ok_or((None, "kind: Required value".to_owned()))?;
    let name = value.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str);
    let namespace = value
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let object = Some(match name {
        Some(name) if kind == "Namespace" || kind == "Node" => format!("{kind} {name}"),
        Some(name) => format!("{kind} {namespace}/{name}"),
        None => kind.to_owned(),
    });
    if !KNOWN_KINDS.contains(&kind) {
        return Err((object, format!("unknown kind {kind:?} (not read by local mode)")));
    }
    if name.is_none_or(str::is_empty) {
        return Err((object, "metadata.name: Required value".into()));
    }
    let json = serde_json::to_value(value).map_err(|e| (object.clone(), e.to_string()))?;
    match kind {
        "Pod" => {
            let pod: Pod =
                serde_json::from_value(json).map_err(|e| (object.clone(), e.to_string()))?;
            manifests.pods.push(pod_def(pod).map_err(|p| (object, p))?);
        }
        "Service" => {
            let svc: Service =
                serde_json::from_value(json).map_err(|e| (object.clone(), e.to_string()))?;
            manifests.services.push(ServiceDef {
                namespace: svc.metadata.namespace.unwrap_or_else(|| "default".into()),
                name: svc.metadata.name.unwrap_or_default(),
                cluster_ip: svc.spec.and_then(|s| s.cluster_ip).filter(|ip| !ip.is_empty()),
            });
        }
        "Namespace" => {
            let labels = value
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(|l| serde_yaml_ng::from_value::<BTreeMap<String, String>>(l.clone()).ok())
                .unwrap_or_default();
            manifests.namespaces.insert(name.unwrap_or_default().to_owned(), labels);
        }
        _ => {}
    }
    Ok(())
}

/// A DNS-1123 label: what names must be to become namespace and file names.
fn check_label(field: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: Invalid value: {value:?}: must be a DNS label (a-z, 0-9, '-', at most 63)"
        ))
    }
}

fn pod_def(pod: Pod) -> Result<PodDef, String> {
    let name = pod.metadata.name.unwrap_or_default();
    let namespace = pod.metadata.namespace.unwrap_or_else(|| "default".into());
    check_label("metadata.name", &name)?;
    check_label("metadata.namespace", &namespace)?;
    let spec = pod.spec.ok_or("spec: Required value")?;
    let node = spec
        .node_name
        .filter(|n| !n.is_empty())
        .ok_or("spec.nodeName: Required value (local mode runs each pod on the node it names)")?;
    check_label("spec.nodeName", &node)?;
    let restart = match spec.restart_policy.as_deref() {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure,
        Some("Never") => RestartPolicy::Never,
        Some(other) => {
            return Err(format!(
                "spec.restartPolicy: Unsupported value: {other:?}: supported values: \"Always\", \"OnFailure\", \"Never\""
            ));
        }
    };
    if spec.containers.is_empty() {
        return Err("spec.containers: Required value".into());
    }
    let mut names = BTreeSet::new();
    let containers = spec
        .containers
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            if !names.insert(c.name.clone()) {
                return Err(format!("spec.containers[{i}].name: Duplicate value: {:?}", c.name));
            }
            container_def(i, c)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PodDef {
        namespace,
        name,
        node,
        service_account: spec
            .service_account_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        labels: pod.metadata.labels.unwrap_or_default(),
        annotations: pod.metadata.annotations.unwrap_or_default(),
        containers,
        restart,
    })
}

fn container_def(index: usize, c: Container) -> Result<ContainerDef, String> {
    let field = |f: &str| format!("spec.containers[{index}].{f}");
    check_label(&field("name"), &c.name)?;
    let mut argv = c.command.unwrap_or_default();
    if argv.is_empty() {
        return Err(format!(
            "{}: Required value (local mode runs commands, not images)",
            field("command")
        ));
    }
    argv.extend(c.args.unwrap_or_default());
    let mut env = Vec::new();
    for (j, var) in c.env.unwrap_or_default().into_iter().enumerate() {
        let value = match (var.value, var.value_from) {
            (_, Some(from)) => {
                let path = from.field_ref.map(|f| f.field_path).unwrap_or_default();
                if !FIELD_REFS.contains(&path.as_str()) {
                    return Err(format!(
                        "{}: Unsupported value: local mode supports only fieldRef to {}",
                        field(&format!("env[{j}].valueFrom")),
                        FIELD_REFS.join(", ")
                    ));
                }
                EnvValue::Field(path)
            }
            (value, None) => EnvValue::Literal(value.unwrap_or_default()),
        };
        env.push((var.name, value));
    }
    Ok(ContainerDef {
        name: c.name,
        argv,
        env,
        working_dir: c.working_dir.filter(|w| !w.is_empty()),
    })
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
