use std::path::Path;

use super::error::LocalError;
use super::parse::{Parsed, parse_file};
use crate::source::{Kind, Object};

pub(super) const FILE: &str = "conf/app.yaml";

pub(super) fn ok(text: &str) -> Vec<Parsed> {
    match parse_file(Path::new(FILE), text.as_bytes()) {
        Ok(parsed) => parsed,
        Err(errors) => panic!("unexpected errors: {errors:#?}"),
    }
}

pub(super) fn errors(text: &str) -> Vec<LocalError> {
    match parse_file(Path::new(FILE), text.as_bytes()) {
        Ok(parsed) => panic!("expected errors, got {parsed:#?}"),
        Err(errors) => errors,
    }
}

/// The single error, checking that it names the file and document.
pub(super) fn one_error(text: &str, document: usize) -> LocalError {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = errors.into_iter().next().unwrap();
    assert_eq!(error.file, Path::new(FILE));
    assert_eq!(error.place.as_ref().map(|p| p.document), Some(document), "{error}");
    assert!(error.to_string().starts_with(&format!("{FILE} document {document}")), "{error}");
    error
}

const EVERY_KIND: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {topology.kubernetes.io/zone: z1}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-1
  serviceAccountName: web
  containers: [{name: app, image: web}]
status: {podIP: 10.0.0.5, podIPs: [{ip: 10.0.0.5}], phase: Running}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.9]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: shop}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec: {jwtRules: [{issuer: "https://issuer.example"}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec: {hosts: [api.example.com], ports: [{number: 443, name: https, protocol: TLS}], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: shop}
spec: {address: 10.1.0.1, labels: {app: vm}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: istio-waypoint}
spec: {controllerName: istio.io/mesh-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec: {parentRefs: [{name: web, kind: Service, group: ""}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: shop}
spec: {parentRefs: [{name: web, kind: Service, group: ""}]}
"#;

#[test]
fn every_kind_is_parsed_into_its_type() {
    let parsed = ok(EVERY_KIND);
    let kinds: Vec<Kind> = parsed.iter().map(|p| p.object.kind()).collect();
    assert_eq!(kinds, Kind::ALL);
    let documents: Vec<usize> = parsed.iter().map(|p| p.place.document).collect();
    assert_eq!(documents, (1..=14).collect::<Vec<_>>());
    let pod = parsed.iter().find_map(|p| match &p.object {
        Object::Pod(pod) => Some(pod),
        _ => None,
    });
    let pod = pod.unwrap();
    assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some("node-1"));
    assert_eq!(pod.status.as_ref().unwrap().pod_ip.as_deref(), Some("10.0.0.5"));
    match &parsed[5].object {
        Object::AuthorizationPolicy(ap) => {
            assert_eq!(ap.spec.action, "DENY");
            assert_eq!(ap.spec.rules[0].from[0].source.namespaces, ["evil"]);
        }
        other => panic!("{other:?}"),
    }
    match &parsed[6].object {
        Object::PeerAuthentication(pa) => assert_eq!(pa.spec.mtls.as_ref().unwrap().mode, "STRICT"),
        other => panic!("{other:?}"),
    }
    match &parsed[12].object {
        Object::Untyped(u) => {
            assert_eq!(u.kind, Kind::HttpRoute);
            assert_eq!(u.metadata.name.as_deref(), Some("web"));
            assert_eq!(u.body["spec"]["parentRefs"][0]["kind"], "Service");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(parsed[11].object.reference().to_string(), "GatewayClass istio-waypoint");
}

#[test]
fn lists_are_expanded_and_empty_documents_skipped() {
    let parsed = ok(r#"
# leading comment only
---
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a}
- apiVersion: v1
  kind: Service
  metadata: {name: svc, namespace: a}
  spec: {ports: [{port: 80}]}
...
---
apiVersion: v1
kind: List
items: []
"#);
    let refs: Vec<String> = parsed.iter().map(|p| p.object.reference().to_string()).collect();
    assert_eq!(refs, ["Namespace a", "Service a/svc"]);
    assert_eq!(parsed[1].place.item, Some(1));
    assert_eq!(parsed[1].place.document, 1);
    assert_eq!(parsed[1].place.line, 4);
}

#[test]
fn json_documents_are_read() {
    let parsed = ok(r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "j"}}"#);
    assert_eq!(parsed[0].object.reference().to_string(), "Namespace j");
}

#[test]
fn namespaced_objects_default_to_the_default_namespace() {
    let parsed = ok("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n\
        apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\n");
    assert!(parsed.iter().all(|p| p.object.metadata().namespace.as_deref() == Some("default")));
}

#[test]
fn irrelevant_kinds_are_skipped() {
    let parsed = ok(r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: web}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: b}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec: {}
---
apiVersion: v1
kind: Namespace
metadata: {name: kept}
"#);
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].place.document, 4);
}

#[test]
fn null_fields_of_custom_resources_are_dropped() {
    let parsed = ok(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  selector:\n  rules:\n",
    );
    match &parsed[0].object {
        Object::AuthorizationPolicy(ap) => {
            assert!(ap.spec.selector.is_none() && ap.spec.rules.is_empty())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn chart_examples_are_accepted() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/base/tests/examples");
    let mut count = 0;
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        match parse_file(&path, &bytes) {
            Ok(parsed) => count += parsed.len(),
            Err(errors) => panic!("{}: {errors:#?}", path.display()),
        }
    }
    assert!(count >= 10, "{count}");
}

#[test]
fn yaml_merge_keys_and_numeric_map_keys_are_read() {
    let parsed = ok(r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: p}
spec:
  selector: {matchLabels: {app: a}}
  mtls: &strict {mode: STRICT}
  portLevelMtls:
    8080:
      <<: *strict
"#);
    match &parsed[0].object {
        Object::PeerAuthentication(pa) => {
            assert_eq!(pa.spec.port_level_mtls["8080"].mode, "STRICT")
        }
        other => panic!("{other:?}"),
    }
}
