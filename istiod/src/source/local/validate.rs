//! Validation of custom resources against the `openAPIV3Schema` of our CRDs
//! (`helm/base/crds`, embedded at compile time), as the API server does with
//! strict field validation.
//!
//! Checked: `type` (object, array, string, integer, number, boolean),
//! `required`, `enum`, `maxItems`/`minItems`, `maxLength`/`minLength`,
//! `maxProperties`/`minProperties`, `minimum`/`maximum` (and the exclusive
//! forms), `format: int32`/`int64` ranges, `nullable`, unknown fields (unless
//! `x-kubernetes-preserve-unknown-fields` or `additionalProperties`), and
//! `x-kubernetes-int-or-string`. `null` for a non-nullable field is pruned,
//! as the API server does. Not checked: `oneOf`/`anyOf`/`allOf`/`not`,
//! `pattern`, other `format`s, list-type uniqueness (`x-kubernetes-list-type`)
//! and CEL rules (`x-kubernetes-validations`). `metadata` is checked by
//! [`super::meta`] instead.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::error::Problem;

const CRDS: [&str; 12] = [
    include_str!("../../../../helm/base/crds/authorizationpolicies.security.istio.io.yaml"),
    include_str!("../../../../helm/base/crds/gatewayclasses.gateway.networking.k8s.io.yaml"),
    include_str!("../../../../helm/base/crds/gateways.gateway.networking.k8s.io.yaml"),
    include_str!("../../../../helm/base/crds/grpcroutes.gateway.networking.k8s.io.yaml"),
    include_str!("../../../../helm/base/crds/httproutes.gateway.networking.k8s.io.yaml"),
    include_str!("../../../../helm/base/crds/peerauthentications.security.istio.io.yaml"),
    include_str!("../../../../helm/base/crds/referencegrants.gateway.networking.k8s.io.yaml"),
    include_str!("../../../../helm/base/crds/requestauthentications.security.istio.io.yaml"),
    include_str!("../../../../helm/base/crds/serviceentries.networking.istio.io.yaml"),
    include_str!("../../../../helm/base/crds/tcproutes.gateway.networking.k8s.io.yaml"),
    include_str!("../../../../helm/base/crds/tlsroutes.gateway.networking.k8s.io.yaml"),
    include_str!("../../../../helm/base/crds/workloadentries.networking.istio.io.yaml"),
];

/// Served versions' schemas, by `(group, kind)` then version.
type Schemas = BTreeMap<(String, String), BTreeMap<String, Value>>;

static SCHEMAS: LazyLock<Result<Schemas, String>> = LazyLock::new(load);

fn load() -> Result<Schemas, String> {
    let mut out = Schemas::new();
    for text in CRDS {
        let crd: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let at = |v: &Value, path: &[&str]| -> Option<Value> {
            path.iter().try_fold(v, |v, key| v.get(key)).cloned()
        };
        let spec = at(&crd, &["spec"]).unwrap_or_default();
        let (Some(Value::String(group)), Some(Value::String(kind))) =
            (at(&spec, &["group"]), at(&spec, &["names", "kind"]))
        else {
            return Err("CRD without spec.group or spec.names.kind".to_owned());
        };
        let versions = out.entry((group, kind.clone())).or_default();
        for version in spec.get("versions").and_then(Value::as_array).into_iter().flatten() {
            if version.get("served").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let (Some(Value::String(name)), Some(schema @ Value::Object(_))) =
                (at(version, &["name"]), at(version, &["schema", "openAPIV3Schema"]))
            else {
                return Err(format!("CRD {kind}: a served version has no name or schema"));
            };
            versions.insert(name, schema);
        }
    }
    Ok(out)
}

/// The schema of a served version, `Err` if the version is not served.
pub(crate) fn schema(group: &str, kind: &str, version: &str) -> Result<&'static Value, Problem> {
    let schemas = SCHEMAS.as_ref().map_err(|e| Problem::NoSchema(format!("{kind}: {e}")))?;
    schemas
        .get(&(group.to_owned(), kind.to_owned()))
        .and_then(|versions| versions.get(version))
        .ok_or_else(|| Problem::UnservedVersion {
            kind: kind.to_owned(),
            version: version.to_owned(),
        })
}

/// Validates a whole object (root schema), pruning non-nullable nulls in
/// place. `metadata` is skipped (checked separately).
pub(crate) fn validate(schema: &Value, object: &mut Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    check(schema, object, "", &mut problems);
    problems
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn field(path: &str) -> String {
    if path.is_empty() { "<root>".to_owned() } else { path.to_owned() }
}

fn invalid(path: &str, value: &Value, message: impl std::fmt::Display) -> Problem {
    Problem::Invalid { field: field(path), message: format!("{value}: {message}") }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn limit(schema: &Value, name: &str) -> Option<u64> {
    schema.get(name).and_then(Value::as_u64)
}

fn check(schema: &Value, value: &mut Value, path: &str, out: &mut Vec<Problem>) {
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            out.push(invalid(path, value, "must be an integer or a string"));
        }
        return;
    }
    if value.is_null() && flag(schema, "nullable") {
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok = match (ty, &*value) {
        (None, _) => true,
        (Some("object"), Value::Object(_)) | (Some("array"), Value::Array(_)) => true,
        (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => true,
        (Some("number"), Value::Number(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    if !ok {
        let message = format!("must be of type {}, not {}", ty.unwrap_or("any"), type_name(value));
        out.push(invalid(path, value, message));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        out.push(invalid(path, value, format!("supported values: {}", list.join(", "))));
    }
    match value {
        Value::Object(map) => check_object(schema, map, path, out),
        Value::Array(items) => {
            check_count(schema, items.len(), "Items", path, out);
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            for (i, item) in items.iter_mut().enumerate() {
                check(item_schema, item, &format!("{path}[{i}]"), out);
            }
        }
        Value::String(s) => {
            let n = s.chars().count() as u64;
            if let Some(max) = limit(schema, "maxLength").filter(|max| n > *max) {
                out.push(invalid(path, value, format!("may not be longer than {max}")));
            } else if let Some(min) = limit(schema, "minLength").filter(|min| n < *min) {
                out.push(invalid(path, value, format!("must be at least {min} characters")));
            }
        }
        Value::Number(n) => {
            if let Some(problem) = check_number(schema, n.as_f64().unwrap_or_default()) {
                out.push(invalid(path, value, problem));
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// `max<what>`/`min<what>` for arrays (`Items`) and objects (`Properties`).
fn check_count(schema: &Value, n: usize, what: &str, path: &str, out: &mut Vec<Problem>) {
    let n = n as u64;
    let noun = what.to_lowercase();
    if let Some(max) = limit(schema, &format!("max{what}")).filter(|max| n > *max) {
        let message = format!("must have at most {max} {noun}, has {n}");
        out.push(Problem::Invalid { field: field(path), message });
    }
    if let Some(min) = limit(schema, &format!("min{what}")).filter(|min| n < *min) {
        let message = format!("must have at least {min} {noun}, has {n}");
        out.push(Problem::Invalid { field: field(path), message });
    }
}

fn check_number(schema: &Value, n: f64) -> Option<String> {
    let bound = |name: &str| schema.get(name).and_then(Value::as_f64);
    if let Some(min) = bound("minimum") {
        if flag(schema, "exclusiveMinimum") && n <= min {
            return Some(format!("must be greater than {min}"));
        }
        if n < min {
            return Some(format!("must be greater than or equal to {min}"));
        }
    }
    if let Some(max) = bound("maximum") {
        if flag(schema, "exclusiveMaximum") && n >= max {
            return Some(format!("must be less than {max}"));
        }
        if n > max {
            return Some(format!("must be less than or equal to {max}"));
        }
    }
    let range = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
        Some("int64") => Some((-9.223_372_036_854_776e18, 9.223_372_036_854_776e18)),
        _ => None,
    };
    match range {
        Some((lo, hi)) if n < lo || n > hi => Some("out of range for its format".to_owned()),
        _ => None,
    }
}

fn check_object(schema: &Value, map: &mut Map<String, Value>, path: &str, out: &mut Vec<Problem>) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    // `null` for a field that is not nullable is dropped, not rejected.
    map.retain(|key, v| {
        let nullable = properties.and_then(|p| p.get(key)).is_some_and(|s| flag(s, "nullable"));
        !v.is_null() || nullable
    });
    for (key, v) in map.iter_mut() {
        let child = join(path, key);
        if path.is_empty() && key == "metadata" {
            continue;
        }
        match (properties.and_then(|p| p.get(key)), additional) {
            (Some(s), _) => check(s, v, &child, out),
            (None, Some(s)) if s.is_object() => check(s, v, &child, out),
            (None, Some(Value::Bool(true))) => {}
            (None, _) if preserve => {}
            (None, _) => out.push(Problem::UnknownField { field: child }),
        }
    }
    for key in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        if let Some(key) = key.as_str()
            && !map.contains_key(key)
        {
            out.push(Problem::Required { field: join(path, key) });
        }
    }
    check_count(schema, map.len(), "Properties", path, out);
}
