//! Every error case of parsing names the file, the document, the object and
//! the field.

use std::path::Path;

use super::error::Problem;
use super::parse::parse_file;
use super::parse_tests::{FILE, errors, one_error};

/// The field and message of the single `Invalid` error of document 1.
fn invalid(text: &str) -> (String, String) {
    match one_error(text, 1).problem {
        Problem::Invalid { field, message } => (field, message),
        other => panic!("{other:?}"),
    }
}

#[test]
fn cluster_scoped_objects_must_not_name_a_namespace() {
    let e = one_error("apiVersion: v1\nkind: Node\nmetadata: {name: n, namespace: x}\n", 1);
    assert!(matches!(e.problem, Problem::NamespaceOnClusterScoped { .. }), "{e}");
    assert_eq!(e.object.as_deref(), Some("Node x/n"));
}

#[test]
fn unknown_kinds_are_errors() {
    let e = one_error(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
        2,
    );
    assert!(matches!(&e.problem, Problem::UnknownKind { kind, .. } if kind == "Widget"), "{e}");
    let e = one_error(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\n",
        1,
    );
    assert!(matches!(e.problem, Problem::UnknownKind { .. }), "{e}");
    let problems: Vec<Problem> =
        errors("metadata: {name: v}\n").into_iter().map(|e| e.problem).collect();
    assert_eq!(
        problems,
        [
            Problem::Required { field: "apiVersion".into() },
            Problem::Required { field: "kind".into() }
        ]
    );
}

#[test]
fn unserved_versions_are_errors() {
    let e = one_error(
        "apiVersion: security.istio.io/v9\nkind: AuthorizationPolicy\nmetadata: {name: p}\n",
        1,
    );
    assert!(matches!(e.problem, Problem::UnservedVersion { .. }), "{e}");
    let e = one_error(
        "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: e}\n",
        1,
    );
    assert!(matches!(e.problem, Problem::UnservedVersion { .. }), "{e}");
}

#[test]
fn syntax_errors_carry_the_line_in_the_file() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: [b\n";
    let e = one_error(text, 2);
    match &e.problem {
        Problem::Syntax { line, message, .. } => {
            assert!(*line >= 8, "line {line}: {e}");
            assert!(!message.contains("at line"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("YAML syntax error at line"), "{e}");
}

#[test]
fn names_and_labels_are_checked() {
    let e = one_error(
        "apiVersion: v1\nkind: Pod\nmetadata: {namespace: a}\nspec: {containers: [{name: c}]}\n",
        1,
    );
    assert_eq!(e.problem, Problem::Required { field: "metadata.name".into() });
    assert_eq!(e.object.as_deref(), Some("Pod"));
    let e = one_error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: Web_1}\nspec: {containers: [{name: c}]}\n",
        1,
    );
    assert!(
        matches!(&e.problem, Problem::Invalid { field, .. } if field == "metadata.name"),
        "{e}"
    );
    assert_eq!(e.object.as_deref(), Some("Pod default/Web_1"));
    let e = one_error("apiVersion: v1\nkind: Service\nmetadata: {name: 1svc}\n", 1);
    assert!(
        matches!(&e.problem, Problem::Invalid { field, .. } if field == "metadata.name"),
        "{e}"
    );
    let errors = errors(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {\"bad key!\": x, ok: \"-bad\"}}\n",
    );
    let fields: Vec<String> = errors
        .iter()
        .map(|e| match &e.problem {
            Problem::Invalid { field, .. } => field.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(fields, ["metadata.labels", "metadata.labels[ok]"]);
}

#[test]
fn core_type_errors_name_the_field() {
    let e = one_error("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: x}\n", 1);
    match &e.problem {
        Problem::Decode { field, message } => {
            assert_eq!(field, "spec.ports", "{e}");
            assert!(message.contains("invalid type"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.object.as_deref(), Some("Service default/s"));
}

#[test]
fn pods_need_named_containers() {
    let e =
        one_error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n", 1);
    assert_eq!(e.problem, Problem::Required { field: "spec.containers".into() });
    let e = one_error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", 1);
    assert_eq!(e.problem, Problem::Required { field: "spec.containers".into() });
    let e = one_error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: \"\"}]}\n",
        1,
    );
    assert_eq!(e.problem, Problem::Required { field: "spec.containers[0].name".into() });
    let e = one_error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{image: x}]}\n",
        1,
    );
    assert_eq!(e.problem, Problem::Required { field: "spec.containers[0].name".into() });
}

#[test]
fn authorization_policy_unknown_field_is_rejected() {
    let e = one_error(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: n}\n\
         spec: {action: ALLOW, rules: [{from: [{source: {principalz: [a]}}]}]}\n",
        1,
    );
    assert_eq!(
        e.problem,
        Problem::UnknownField { field: "spec.rules[0].from[0].source.principalz".into() }
    );
    assert_eq!(e.object.as_deref(), Some("AuthorizationPolicy n/p"));
    assert!(
        e.to_string().contains("spec.rules[0].from[0].source.principalz: unknown field"),
        "{e}"
    );
}

#[test]
fn authorization_policy_wrong_type_is_rejected() {
    let (field, message) = invalid(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {rules: x}\n",
    );
    assert_eq!(field, "spec.rules");
    assert!(message.contains("must be of type array"), "{message}");
}

#[test]
fn peer_authentication_mode_enum_is_enforced() {
    let (field, message) = invalid(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: {mtls: {mode: BOGUS}}\n",
    );
    assert_eq!(field, "spec.mtls.mode");
    assert!(message.contains("STRICT"), "{message}");
}

#[test]
fn duplicates_in_one_file_name_both_documents() {
    let e = one_error(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        2,
    );
    match &e.problem {
        Problem::Duplicate { other } => {
            assert_eq!((other.document, other.file.as_path()), (1, Path::new(FILE)))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.object.as_deref(), Some("Namespace a"));
}

#[test]
fn every_error_of_a_file_is_reported() {
    let errors = errors(
        "apiVersion: v1\nkind: Widget\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
    );
    let documents: Vec<Option<usize>> =
        errors.iter().map(|e| e.place.as_ref().map(|p| p.document)).collect();
    assert_eq!(documents, [Some(1), Some(2)]);
}

#[test]
fn non_utf8_files_are_errors() {
    let errors = parse_file(Path::new(FILE), &[0xff, 0xfe, 0x00]).unwrap_err();
    assert_eq!(errors[0].problem, Problem::NotUtf8);
    assert!(errors[0].place.is_none());
}

#[test]
fn empty_or_mistyped_metadata_is_reported() {
    let e = one_error("apiVersion: v1\nkind: Namespace\nmetadata:\n", 1);
    assert_eq!(e.problem, Problem::Required { field: "metadata.name".into() });
    let e = one_error("apiVersion: v1\nkind: Namespace\nmetadata: {name: 5}\n", 1);
    assert!(
        matches!(&e.problem, Problem::Invalid { field, .. } if field == "metadata.name"),
        "{e}"
    );
    let e = one_error("apiVersion: v1\nkind: Namespace\nmetadata: [a]\n", 1);
    assert!(matches!(&e.problem, Problem::Invalid { field, .. } if field == "metadata"), "{e}");
    let e = one_error("apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {n: 1}}\n", 1);
    assert!(
        matches!(&e.problem, Problem::Decode { field, .. } if field == "metadata.labels.n"),
        "{e}"
    );
}

#[test]
fn scalars_of_the_wrong_type_are_located() {
    let e = one_error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {a: \"1\"}}\n\
         spec: {containers: [{name: c, ports: [{containerPort: 80}]}, {name: d, image: true}]}\n",
        1,
    );
    match &e.problem {
        Problem::Decode { field, message } => {
            assert_eq!(field, "spec.containers[1].image", "{e}");
            assert!(message.contains("invalid type: boolean"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let e = one_error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n\
         spec: {containers: [{name: c, ports: [{containerPort: 80}], image: 80}]}\n",
        1,
    );
    assert!(
        matches!(&e.problem, Problem::Decode { field, .. } if field == "spec.containers[0].image"),
        "{e}"
    );
}
