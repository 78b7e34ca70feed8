use serde_json::{Value, json};

use super::error::Problem;
use super::validate::{schema, validate};

fn schema_of(yaml: &str) -> Value {
    serde_yaml_ng::from_str(yaml).unwrap()
}

const SCHEMA: &str = r#"
type: object
properties:
  apiVersion: {type: string}
  kind: {type: string}
  metadata: {type: object}
  spec:
    type: object
    required: [name]
    properties:
      name: {type: string, maxLength: 5, minLength: 2}
      mode: {type: string, enum: [A, B]}
      count: {type: integer, minimum: 1, maximum: 10}
      small: {type: integer, format: int32}
      ratio: {type: number}
      on: {type: boolean}
      port: {x-kubernetes-int-or-string: true}
      tags: {type: array, maxItems: 2, minItems: 1, items: {type: string}}
      labels: {type: object, additionalProperties: {type: string}, maxProperties: 1}
      free: {type: object, x-kubernetes-preserve-unknown-fields: true}
      maybe: {type: string, nullable: true}
"#;

fn problems(spec: Value) -> Vec<Problem> {
    let mut object = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "n", "anything": 1}, "spec": spec});
    validate(&schema_of(SCHEMA), &mut object)
}

fn fields(problems: &[Problem]) -> Vec<String> {
    problems
        .iter()
        .map(|p| match p {
            Problem::Invalid { field, .. }
            | Problem::Required { field }
            | Problem::UnknownField { field } => field.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_valid_object_passes() {
    let spec = json!({
        "name": "abc", "mode": "A", "count": 3, "small": 7, "ratio": 0.5, "on": true, "port": "http",
        "tags": ["t"], "labels": {"k": "v"}, "free": {"whatever": [1, {"x": null}]}, "maybe": null,
    });
    assert_eq!(problems(spec), []);
    assert_eq!(problems(json!({"name": "ab", "port": 8080, "count": 10})), []);
}

#[test]
fn types_are_checked() {
    let p = problems(
        json!({"name": 5, "count": 1.5, "on": "yes", "tags": "t", "labels": {"k": 1}, "ratio": "x", "port": true}),
    );
    assert_eq!(
        fields(&p),
        [
            "spec.count",
            "spec.labels.k",
            "spec.name",
            "spec.on",
            "spec.port",
            "spec.ratio",
            "spec.tags"
        ]
    );
    assert!(
        matches!(&p[0], Problem::Invalid { message, .. } if message.contains("must be of type integer, not number"))
    );
}

#[test]
fn required_enum_and_bounds_are_checked() {
    let p = problems(
        json!({"mode": "C", "count": 0, "small": 3_000_000_000_u64, "tags": ["a", "b", "c"], "labels": {"a": "1", "b": "2"}}),
    );
    assert_eq!(
        fields(&p),
        ["spec.count", "spec.labels", "spec.mode", "spec.small", "spec.tags", "spec.name"]
    );
    assert!(matches!(&p[5], Problem::Required { .. }));
    let p = problems(json!({"name": "toolong", "tags": []}));
    assert_eq!(fields(&p), ["spec.name", "spec.tags"]);
    let p = problems(json!({"name": "x"}));
    assert!(
        matches!(&p[0], Problem::Invalid { message, .. } if message.contains("at least 2")),
        "{p:?}"
    );
}

#[test]
fn unknown_fields_are_rejected_and_nulls_pruned() {
    let p = problems(json!({"name": "ab", "extra": 1, "mode": null}));
    assert_eq!(p, [Problem::UnknownField { field: "spec.extra".into() }]);
    let mut object = json!({"spec": {"name": "ab", "mode": null, "maybe": null}, "bogus": 1});
    let p = validate(&schema_of(SCHEMA), &mut object);
    assert_eq!(p, [Problem::UnknownField { field: "bogus".into() }]);
    assert_eq!(object["spec"], json!({"name": "ab", "maybe": null}));
}

#[test]
fn embedded_crds_serve_their_versions() {
    for (group, kind, versions) in [
        ("security.istio.io", "AuthorizationPolicy", &["v1", "v1beta1"][..]),
        ("security.istio.io", "PeerAuthentication", &["v1", "v1beta1"]),
        ("security.istio.io", "RequestAuthentication", &["v1", "v1beta1"]),
        ("networking.istio.io", "ServiceEntry", &["v1", "v1beta1", "v1alpha3"]),
        ("networking.istio.io", "WorkloadEntry", &["v1", "v1beta1", "v1alpha3"]),
        ("gateway.networking.k8s.io", "Gateway", &["v1", "v1beta1"]),
        ("gateway.networking.k8s.io", "GatewayClass", &["v1", "v1beta1"]),
        ("gateway.networking.k8s.io", "HTTPRoute", &["v1", "v1beta1"]),
        ("gateway.networking.k8s.io", "GRPCRoute", &["v1"]),
    ] {
        for version in versions {
            let s =
                schema(group, kind, version).unwrap_or_else(|e| panic!("{kind} {version}: {e}"));
            assert_eq!(s["type"], "object");
        }
    }
    assert!(matches!(
        schema("security.istio.io", "AuthorizationPolicy", "v1alpha1"),
        Err(Problem::UnservedVersion { .. })
    ));
}

#[test]
fn real_crd_bounds_apply() {
    let s = schema("networking.istio.io", "ServiceEntry", "v1").unwrap();
    let mut object = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "e"},
        "spec": {"hosts": ["a.example"], "ports": [{"number": 0, "name": "p"}]},
        "status": {"anything": {"goes": true}},
    });
    let p = validate(s, &mut object);
    assert_eq!(fields(&p), ["spec.ports[0].number"], "{p:?}");
}
