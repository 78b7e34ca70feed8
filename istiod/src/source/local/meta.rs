//! `metadata` checks the API server makes for every object: name, namespace,
//! label and annotation keys, label values.

use serde_json::Value;

use super::error::Problem;
use crate::source::Kind;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const LABEL_VALUE_MAX: usize = 63;

fn alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn starts_and_ends(s: &str, ok: impl Fn(char) -> bool) -> bool {
    s.chars().next().is_some_and(&ok) && s.chars().last().is_some_and(ok)
}

/// RFC 1123 label: at most 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub(crate) fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > DNS1123_LABEL_MAX {
        return Err(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    if !starts_and_ends(s, alnum_lower) || !s.chars().all(|c| alnum_lower(c) || c == '-') {
        return Err("a lowercase RFC 1123 label must consist of lower case alphanumeric \
                    characters or '-', and must start and end with an alphanumeric character"
            .to_owned());
    }
    Ok(())
}

/// RFC 1035 label (Service names): an RFC 1123 label starting with a letter.
pub(crate) fn dns1035_label(s: &str) -> Result<(), String> {
    dns1123_label(s)?;
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("a DNS-1035 label must start with an alphabetic character".to_owned());
    }
    Ok(())
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub(crate) fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    if s.split('.').any(|part| dns1123_label(part).is_err()) {
        return Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                    characters, '-' or '.', and must start and end with an alphanumeric character"
            .to_owned());
    }
    Ok(())
}

fn qualified_part(s: &str) -> bool {
    s.len() <= LABEL_VALUE_MAX
        && starts_and_ends(s, |c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Label or annotation key: `[prefix/]name`, prefix a DNS subdomain, name at
/// most 63 of `[A-Za-z0-9-_.]`, alphanumeric at both ends.
pub(crate) fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        dns1123_subdomain(prefix).map_err(|e| format!("prefix part {e}"))?;
    }
    if !qualified_part(name) {
        return Err("name part must consist of at most 63 alphanumeric characters, '-', '_' or \
                    '.', and must start and end with an alphanumeric character"
            .to_owned());
    }
    Ok(())
}

/// Label value: empty, or at most 63 of `[A-Za-z0-9-_.]`, alphanumeric at both ends.
pub(crate) fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || qualified_part(s) {
        Ok(())
    } else {
        Err("a valid label must be an empty string or consist of at most 63 alphanumeric \
             characters, '-', '_' or '.', and must start and end with an alphanumeric character"
            .to_owned())
    }
}

fn invalid(field: &str, value: &str, message: String) -> Problem {
    Problem::Invalid { field: field.to_owned(), message: format!("{value:?}: {message}") }
}

/// Checks `metadata` of an object of `kind` (after namespace defaulting).
/// Types were already checked by decoding `ObjectMeta`.
pub(crate) fn check(kind: Kind, metadata: Option<&Value>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let name = metadata.and_then(|m| m.get("name"));
    if let Some(other) = name.filter(|n| !n.is_string() && !n.is_null()) {
        let message = format!("{other}: must be of type string");
        return vec![Problem::Invalid { field: "metadata.name".to_owned(), message }];
    }
    let name = name.and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        problems.push(Problem::Required { field: "metadata.name".to_owned() });
    } else {
        let rule = match kind {
            Kind::Namespace => dns1123_label(name),
            Kind::Service => dns1035_label(name),
            _ => dns1123_subdomain(name),
        };
        if let Err(e) = rule {
            problems.push(invalid("metadata.name", name, e));
        }
    }
    if let Some(ns) = metadata.and_then(|m| m.get("namespace")).and_then(Value::as_str)
        && let Err(e) = dns1123_label(ns)
    {
        problems.push(invalid("metadata.namespace", ns, e));
    }
    let map = |field: &str| metadata.and_then(|m| m.get(field)).and_then(Value::as_object);
    for (key, value) in map("labels").into_iter().flatten() {
        if let Err(e) = qualified_name(key) {
            problems.push(invalid("metadata.labels", key, e));
        }
        let value = value.as_str().unwrap_or_default();
        if let Err(e) = label_value(value) {
            problems.push(invalid(&format!("metadata.labels[{key}]"), value, e));
        }
    }
    for key in map("annotations").into_iter().flatten().map(|(k, _)| k) {
        if let Err(e) = qualified_name(key) {
            problems.push(invalid("metadata.annotations", key, e));
        }
    }
    problems
}
