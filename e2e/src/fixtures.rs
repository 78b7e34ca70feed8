//! YAML for the attack scenarios: namespaces, pods that say who they are
//! and record what they receive, idle pods to act from, Services.

/// A TCP server on 8080 that answers any request with an HTTP 200 whose
/// body is `served-by=<pod name> path=<request path>` and prints every
/// connection's first bytes (`RECEIVED ...`) to its log, so a pod can tell
/// who answered and an attacker can show what it captured.
const IDENTITY_SERVER: &str = r#"
import os, socket, threading
name = os.environ["POD_NAME"]
def handle(c, peer):
    try:
        c.settimeout(5)
        data = c.recv(65536)
        print("RECEIVED from", peer[0], repr(data[:300]), flush=True)
        line = data.split(b"\r\n", 1)[0].split(b" ")
        path = line[1].decode(errors="replace") if len(line) > 1 else "-"
        body = ("served-by=%s path=%s\n" % (name, path)).encode()
        head = "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        c.sendall(head.encode() + body)
    except Exception as e:
        print("ERROR", e, flush=True)
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(128)
print("listening", flush=True)
while True:
    c, peer = s.accept()
    threading.Thread(target=handle, args=(c, peer), daemon=True).start()
"#;

/// A Namespace, in the ambient mesh or not.
pub fn namespace(name: &str, ambient: bool) -> String {
    let mode = if ambient { "ambient" } else { "none" };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    istio.io/dataplane-mode: {mode}\n"
    )
}

fn labels_yaml(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return "{}".to_owned();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

/// A pod running [`IDENTITY_SERVER`] on 8080.
pub fn identity_server(
    namespace: &str,
    name: &str,
    node: &str,
    service_account: &str,
    labels: &[(&str, &str)],
) -> String {
    let script = serde_json::Value::String(IDENTITY_SERVER.to_owned()).to_string();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {labels}\n\
         spec:\n  nodeName: {node}\n  serviceAccountName: {service_account}\n  containers:\n  - name: main\n\
         \x20   command: [python3, -u, -c]\n    args: [{script}]\n    workingDir: /tmp\n\
         \x20   env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]\n\
         \x20   ports: [{{containerPort: 8080}}]\n",
        labels = labels_yaml(labels),
    )
}

/// A pod that idles until the test acts from it with `ambientctl local exec`.
pub fn idle_pod(namespace: &str, name: &str, node: &str, service_account: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n\
         spec:\n  nodeName: {node}\n  serviceAccountName: {service_account}\n  containers:\n\
         \x20 - name: idle\n    command: [sleep, infinity]\n"
    )
}

/// A Service on `port` selecting `app: <app>` on target port 8080.
pub fn service(namespace: &str, name: &str, app: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\n\
         spec:\n  selector: {{app: {app}}}\n  ports:\n  - {{name: tcp, port: {port}, targetPort: 8080}}\n"
    )
}

/// Documents joined into one file.
pub fn join(docs: &[String]) -> String {
    docs.join("---\n")
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "test code")]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<serde_json::Value> {
        serde_yaml_ng::Deserializer::from_str(yaml)
            .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
            .collect()
    }

    #[test]
    fn the_documents_are_the_objects_they_name() {
        let docs = parse(&join(&[
            namespace("evil", false),
            identity_server("demo", "server", "node-b", "server", &[("app", "server")]),
            idle_pod("demo", "client", "node-a", "client"),
            service("demo", "server", "server", 80),
        ]));
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[0]["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
        let server = &docs[1];
        assert_eq!(server["metadata"]["labels"]["app"], "server");
        assert_eq!(server["spec"]["containers"][0]["args"][0], IDENTITY_SERVER);
        assert_eq!(server["spec"]["nodeName"], "node-b");
        assert_eq!(docs[2]["spec"]["containers"][0]["command"][1], "infinity");
        assert_eq!(docs[3]["spec"]["ports"][0]["targetPort"], 8080);
    }
}
