//! One file of the config directory -> the objects in it, or every error.
//!
//! A file holds YAML documents separated by `---` lines (JSON is YAML too).
//! Each document is an object, or a `kind: List` whose `items` are objects;
//! empty documents are skipped. Objects of [`SKIPPED`] kinds are accepted and
//! ignored; any other kind istiod does not read is an error.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::decode::{decode, without_marks};
use super::error::{LocalError, Place, Problem};
use super::{meta, validate};
use crate::source::{Kind, Object, ObjectRef, UntypedObject};

/// Kinds (by API group and kind, any version) that are valid Kubernetes,
/// common next to mesh config, and ignored: workload controllers (Pods must be
/// written out), RBAC, config, and the Gateway API kinds istiod does not read.
pub const SKIPPED: &[(&str, &str)] = &[
    ("", "ServiceAccount"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "Endpoints"),
    ("", "LimitRange"),
    ("", "ResourceQuota"),
    ("", "PersistentVolumeClaim"),
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ReplicaSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("policy", "PodDisruptionBudget"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("networking.k8s.io", "Ingress"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("gateway.networking.k8s.io", "ReferenceGrant"),
    ("gateway.networking.k8s.io", "TCPRoute"),
    ("gateway.networking.k8s.io", "TLSRoute"),
];

/// An accepted object and where it was defined.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    pub(crate) object: Object,
    pub(crate) place: Place,
}

/// Every object of a file, or every error in it (then nothing of it is used).
pub(crate) fn parse_file(file: &Path, bytes: &[u8]) -> Result<Vec<Parsed>, Vec<LocalError>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| vec![LocalError::file(file.to_owned(), Problem::NotUtf8)])?;
    let mut objects: Vec<Parsed> = Vec::new();
    let mut errors = Vec::new();
    for (index, chunk) in split_documents(text).into_iter().enumerate() {
        let place =
            Place { file: file.to_owned(), document: index + 1, line: chunk.line, item: None };
        match document(&chunk, place) {
            Ok(parsed) => objects.extend(parsed),
            Err(e) => errors.extend(e),
        }
    }
    let mut seen: BTreeMap<ObjectRef, &Place> = BTreeMap::new();
    for parsed in &objects {
        let key = parsed.object.reference();
        if let Some(first) = seen.get(&key) {
            let problem = Problem::Duplicate { other: (*first).clone() };
            errors.push(LocalError::at(&parsed.place, Some(key.to_string()), problem));
        } else {
            seen.insert(key, &parsed.place);
        }
    }
    if errors.is_empty() { Ok(objects) } else { Err(errors) }
}

/// One YAML document's text and the line it starts on.
#[derive(Debug)]
struct Chunk {
    line: usize,
    text: String,
}

/// Splits at `---` lines (a directives-end marker at column 0 always starts a
/// new document); `...` ends one. Documents with nothing but blank lines and
/// comments are dropped, so numbering counts the real ones.
fn split_documents(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut current = Chunk { line: 1, text: String::new() };
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let rest =
            line.strip_prefix("---").filter(|r| r.is_empty() || r.starts_with(char::is_whitespace));
        let end = line.trim_end() == "...";
        if rest.is_some() || end {
            chunks
                .push(std::mem::replace(&mut current, Chunk { line: n + 1, text: String::new() }));
        }
        match rest {
            // Keep columns: the marker becomes blanks.
            Some(rest) => current.text.extend(["   ", rest]),
            None if end => current.text.push('\n'),
            None => current.text.push_str(line),
        }
    }
    chunks.push(current);
    chunks.retain(|c| {
        c.text.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        })
    });
    chunks
}

fn document(chunk: &Chunk, place: Place) -> Result<Vec<Parsed>, Vec<LocalError>> {
    let syntax = |e: serde_yaml_ng::Error| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let problem = Problem::Syntax {
            line: chunk.line + line.saturating_sub(1),
            column,
            message: without_marks(&e.to_string()),
        };
        vec![LocalError::at(&place, None, problem)]
    };
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&chunk.text).map_err(syntax)?;
    // `<<: *anchor` merge keys, as kubectl reads them.
    yaml.apply_merge().map_err(syntax)?;
    let value = serde_json::to_value(yaml).map_err(|e| {
        let problem = Problem::Decode { field: "<root>".to_owned(), message: e.to_string() };
        vec![LocalError::at(&place, None, problem)]
    })?;
    match value {
        Value::Null => Ok(Vec::new()),
        v if v.get("kind").and_then(Value::as_str) == Some("List")
            && v.get("apiVersion").and_then(Value::as_str) == Some("v1") =>
        {
            list(v, &place)
        }
        v => Ok(object(v, &place)?.into_iter().collect()),
    }
}

fn list(value: Value, place: &Place) -> Result<Vec<Parsed>, Vec<LocalError>> {
    let items = match value.get("items") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            let message = format!("{other}: must be of type array");
            let problem = Problem::Invalid { field: "items".to_owned(), message };
            return Err(vec![LocalError::at(place, Some("List".to_owned()), problem)]);
        }
    };
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let place = Place { item: Some(i), ..place.clone() };
        match object(item, &place) {
            Ok(parsed) => objects.extend(parsed),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() { Ok(objects) } else { Err(errors) }
}

fn skipped(api_version: &str, kind: &str) -> bool {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    SKIPPED.contains(&(group, kind))
}

fn describe(kind: &str, value: &Value) -> String {
    let meta = value.get("metadata");
    let get = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str).unwrap_or_default();
    match (get("namespace"), get("name")) {
        (_, "") => kind.to_owned(),
        ("", name) => format!("{kind} {name}"),
        (ns, name) => format!("{kind} {ns}/{name}"),
    }
}

/// One object: kind, namespace defaulting, metadata, schema, typed decoding.
fn object(mut value: Value, place: &Place) -> Result<Option<Parsed>, Vec<LocalError>> {
    let err = |object: Option<String>, problems: Vec<Problem>| -> Vec<LocalError> {
        problems.into_iter().map(|p| LocalError::at(place, object.clone(), p)).collect()
    };
    if !value.is_object() {
        return Err(err(None, vec![Problem::NotAMapping]));
    }
    let text = |f: &str| value.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (api_version, kind_name) = (text("apiVersion"), text("kind"));
    let mut missing = Vec::new();
    for (field, v) in [("apiVersion", &api_version), ("kind", &kind_name)] {
        if v.is_empty() {
            missing.push(Problem::Required { field: field.to_owned() });
        }
    }
    if !missing.is_empty() {
        return Err(err(None, missing));
    }
    if skipped(&api_version, &kind_name) {
        return Ok(None);
    }
    let unknown =
        || Problem::UnknownKind { api_version: api_version.clone(), kind: kind_name.clone() };
    let kind =
        Kind::from_api(&api_version, &kind_name).ok_or_else(|| err(None, vec![unknown()]))?;
    let version = api_version.rsplit('/').next().unwrap_or_default();
    let schema = match kind {
        Kind::Namespace | Kind::Node | Kind::Pod | Kind::Service | Kind::EndpointSlice => {
            if version != kind.version() {
                let problem =
                    Problem::UnservedVersion { kind: kind_name, version: version.to_owned() };
                return Err(err(None, vec![problem]));
            }
            None
        }
        _ => Some(
            validate::schema(kind.group(), kind.name(), version).map_err(|p| err(None, vec![p]))?,
        ),
    };
    default_namespace(kind, &mut value)
        .map_err(|p| err(Some(describe(&kind_name, &value)), vec![p]))?;
    let label = describe(&kind_name, &value);
    let mut problems = meta::check(kind, value.get("metadata"));
    if let Some(schema) = schema {
        problems.extend(validate::validate(schema, &mut value));
    }
    if !problems.is_empty() {
        return Err(err(Some(label), problems));
    }
    let object = typed(kind, value).map_err(|p| err(Some(label.clone()), vec![p]))?;
    if let Object::Pod(pod) = &object {
        let problems = pod_problems(pod);
        if !problems.is_empty() {
            return Err(err(Some(label), problems));
        }
    }
    Ok(Some(Parsed { object, place: place.clone() }))
}

/// Namespaced objects without a namespace go to `default`; cluster-scoped
/// ones must not name one.
fn default_namespace(kind: Kind, value: &mut Value) -> Result<(), Problem> {
    let Some(root) = value.as_object_mut() else { return Err(Problem::NotAMapping) };
    let meta = root.entry("metadata").or_insert(Value::Null);
    if meta.is_null() {
        *meta = Value::Object(Default::default());
    }
    let Some(meta) = meta.as_object_mut() else {
        let message = "must be of type object".to_owned();
        return Err(Problem::Invalid { field: "metadata".to_owned(), message });
    };
    let current = meta.get("namespace").and_then(Value::as_str).unwrap_or_default().to_owned();
    match (kind.namespaced(), current.is_empty()) {
        (true, true) => {
            meta.insert("namespace".to_owned(), Value::String("default".to_owned()));
            Ok(())
        }
        (false, false) => Err(Problem::NamespaceOnClusterScoped {
            kind: kind.name().to_owned(),
            namespace: current,
        }),
        _ => Ok(()),
    }
}

fn typed(kind: Kind, value: Value) -> Result<Object, Problem> {
    Ok(match kind {
        Kind::Namespace => Object::Namespace(decode::<Namespace>(&value)?),
        Kind::Node => Object::Node(decode::<Node>(&value)?),
        Kind::Pod => Object::Pod(decode::<Pod>(&value)?),
        Kind::Service => Object::Service(decode::<Service>(&value)?),
        Kind::EndpointSlice => Object::EndpointSlice(decode::<EndpointSlice>(&value)?),
        Kind::AuthorizationPolicy => Object::AuthorizationPolicy(decode(&value)?),
        Kind::PeerAuthentication => Object::PeerAuthentication(decode(&value)?),
        Kind::ServiceEntry => Object::ServiceEntry(decode(&value)?),
        Kind::WorkloadEntry => Object::WorkloadEntry(decode(&value)?),
        Kind::RequestAuthentication
        | Kind::Gateway
        | Kind::GatewayClass
        | Kind::HttpRoute
        | Kind::GrpcRoute => {
            let metadata = value.get("metadata").cloned().unwrap_or_default();
            let metadata: ObjectMeta = decode(&metadata).map_err(|p| match p {
                Problem::Decode { field, message } if field == "<root>" => {
                    Problem::Decode { field: "metadata".to_owned(), message }
                }
                Problem::Decode { field, message } => {
                    Problem::Decode { field: format!("metadata.{field}"), message }
                }
                other => other,
            })?;
            Object::Untyped(UntypedObject { kind, metadata, body: value })
        }
    })
}

/// What the API server requires of a Pod beyond types.
fn pod_problems(pod: &Pod) -> Vec<Problem> {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    if containers.is_empty() {
        return vec![Problem::Required { field: "spec.containers".to_owned() }];
    }
    let init = pod.spec.as_ref().and_then(|s| s.init_containers.as_deref()).unwrap_or_default();
    let named = |list: &str, i: usize, name: &str| {
        name.is_empty().then(|| Problem::Required { field: format!("spec.{list}[{i}].name") })
    };
    let mut problems: Vec<Problem> = containers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| named("containers", i, &c.name))
        .collect();
    problems
        .extend(init.iter().enumerate().filter_map(|(i, c)| named("initContainers", i, &c.name)));
    problems
}
