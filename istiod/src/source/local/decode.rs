//! Typed decoding of a JSON object with the path of the field at fault.
//!
//! serde_json is strict about types but does not say where; serde_yaml_ng
//! says where but reads any scalar as a string. So: decode strictly, and on
//! failure ask the YAML decoder for the path; if it finds nothing wrong (a
//! number or boolean where a string belongs), find the scalar whose
//! stringification changes the strict error.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::Problem;

const ROOT: &str = "<root>";

/// Removes the ` at line L column C` marks from a serde_yaml_ng message: they
/// are relative to the text parsed, not to the file.
pub(crate) fn without_marks(message: &str) -> String {
    let mut out = message.to_owned();
    while let Some(start) = out.find(" at line ") {
        let tail = out.get(start + 9..).unwrap_or_default();
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let line_len = digits(tail);
        let after_line = tail.get(line_len..).unwrap_or_default();
        let Some(col) = after_line.strip_prefix(" column ") else { break };
        let end = start + 9 + line_len + 8 + digits(col);
        out.replace_range(start..end.min(out.len()), "");
    }
    out
}

/// `value` as a `T`, or what is wrong and where.
pub(crate) fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, Problem> {
    let strict = match serde_json::from_value::<T>(value.clone()) {
        Ok(decoded) => return Ok(decoded),
        Err(e) => e.to_string(),
    };
    decode_yaml::<T>(value)?;
    let field = locate::<T>(value, &strict).unwrap_or_else(|| ROOT.to_owned());
    Err(Problem::Decode { field, message: strict })
}

fn decode_yaml<T: DeserializeOwned>(value: &Value) -> Result<T, Problem> {
    let problem = |e: serde_yaml_ng::Error| {
        let message = without_marks(&e.to_string());
        match message.split_once(": ") {
            Some((field, rest)) if !field.contains(' ') => {
                Problem::Decode { field: field.to_owned(), message: rest.to_owned() }
            }
            _ => Problem::Decode { field: ROOT.to_owned(), message },
        }
    };
    let text = serde_yaml_ng::to_string(value).map_err(problem)?;
    serde_yaml_ng::from_str(&text).map_err(problem)
}

/// Every number and boolean: (display path, JSON pointer).
fn scalars(value: &Value, path: &str, pointer: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Number(_) | Value::Bool(_) => out.push((path.to_owned(), pointer.to_owned())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                scalars(item, &format!("{path}[{i}]"), &format!("{pointer}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                let escaped = key.replace('~', "~0").replace('/', "~1");
                scalars(item, &child, &format!("{pointer}/{escaped}"), out);
            }
        }
        Value::Null | Value::String(_) => {}
    }
}

/// How serde_json names a scalar in "invalid type" errors.
fn unexpected(scalar: &Value) -> String {
    match scalar {
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
        other => format!("integer `{other}`"),
    }
}

/// The scalar named by `strict` whose stringification makes that error go
/// away, without causing one about the string put in its place.
fn locate<T: DeserializeOwned>(value: &Value, strict: &str) -> Option<String> {
    let mut candidates = Vec::new();
    scalars(value, "", "", &mut candidates);
    candidates.into_iter().find_map(|(path, pointer)| {
        let mut changed = value.clone();
        let slot = changed.pointer_mut(&pointer)?;
        if !strict.contains(&unexpected(slot)) {
            return None;
        }
        let text = slot.to_string();
        *slot = Value::String(text.clone());
        match serde_json::from_value::<T>(changed) {
            Ok(_) => Some(path),
            Err(e) => {
                let e = e.to_string();
                (e != strict && !e.contains(&format!("string \"{text}\""))).then_some(path)
            }
        }
    })
}
