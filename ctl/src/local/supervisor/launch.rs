//! How each process of the mesh is started: program, environment, log.

use std::path::{Path, PathBuf};

use mesh_netns::{NodeHandle, PodHandle};

use super::probe::{ISTIOD_GRPC_PORT, ISTIOD_MONITORING_PORT, istiod_addr};
use crate::local::layout::{DNS_IP, ISTIOD_HOST, Layout};
use crate::local::manifest::{ContainerDef, EnvValue, PodDef};
use crate::local::process::Launch;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn var(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}

/// istiod in local mode in the fabric namespace (see `istiod/README.md`).
pub(super) fn istiod(layout: &Layout, bin_dir: &Path, fabric: &str, nodes: &[String]) -> Launch {
    Launch {
        what: "istiod".into(),
        netns: fabric.to_owned(),
        argv: vec![bin_dir.join("istiod").display().to_string()],
        env: vec![
            var("PATH", PATH),
            var("LOCAL_CONFIG_DIR", layout.config().display()),
            var("LOCAL_STATE_DIR", layout.istiod_state().display()),
            var("LOCAL_NODES", nodes.join(",")),
            var("GRPC_ADDRESS", istiod_addr(ISTIOD_GRPC_PORT)),
            var("PLAINTEXT_XDS_ADDRESS", "127.0.0.1:15010"),
            var("MONITORING_ADDRESS", istiod_addr(ISTIOD_MONITORING_PORT)),
            var("LOG_LEVEL", "info"),
        ],
        working_dir: None,
        log: layout.component_log("istiod"),
        layout: layout.clone(),
    }
}

/// A node's ztunnel (upstream's variable names, see `ztunnel/src/app/config.rs`).
pub(super) fn ztunnel(
    layout: &Layout,
    bin_dir: &Path,
    node: &NodeHandle,
    zds_socket: &Path,
) -> Launch {
    let istiod = format!("{ISTIOD_HOST}:{ISTIOD_GRPC_PORT}");
    Launch {
        what: format!("ztunnel {}", node.name),
        netns: node.netns_name.clone(),
        argv: vec![bin_dir.join("ztunnel").display().to_string()],
        env: vec![
            var("PATH", PATH),
            var("CA_ADDRESS", &istiod),
            var("XDS_ADDRESS", &istiod),
            var("ISTIOD_DIAL_ADDRESS", istiod_addr(ISTIOD_GRPC_PORT)),
            var("NODE_NAME", &node.name),
            var("POD_NAME", format!("ztunnel-{}", node.name)),
            var("INSTANCE_IP", node.ip),
            var("ROOT_CERT_PATH", layout.root_cert().display()),
            var("TOKEN_PATH", layout.node_token(&node.name).display()),
            var("ZDS_SOCKET_PATH", zds_socket.display()),
            var("DNS_PROXY", "true"),
            // No upstream resolvers: the fabric has no route to the host's
            // (on purpose), and there is no cluster DNS. Without upstreams
            // ztunnel's DNS proxy answers the whole cluster domain itself
            // (unknown names: NXDOMAIN at once) and fails other names with
            // SERVFAIL at once, instead of forwarding into a black hole
            // while the pod's resolver waits out its search list.
            var("DNS_RESOLV_CONF", "/dev/null"),
            var("RUST_LOG", "info"),
        ],
        working_dir: None,
        log: layout.component_log(&format!("ztunnel-{}", node.name)),
        layout: layout.clone(),
    }
}

/// One container of a pod: its command and args, env and working directory.
pub(super) fn container(
    layout: &Layout,
    pod: &PodDef,
    c: &ContainerDef,
    handle: &PodHandle,
) -> Launch {
    let mut env = vec![var("PATH", PATH), var("HOME", "/root"), var("HOSTNAME", &pod.name)];
    for (name, value) in &c.env {
        let value = match value {
            EnvValue::Literal(v) => v.clone(),
            EnvValue::Field(field) => match field.as_str() {
                "metadata.name" => pod.name.clone(),
                "metadata.namespace" => pod.namespace.clone(),
                "spec.nodeName" => pod.node.clone(),
                "spec.serviceAccountName" => pod.service_account.clone(),
                _ => handle.ip.to_string(),
            },
        };
        env.push((name.clone(), value));
    }
    Launch {
        what: format!("container {}/{}/{}", pod.namespace, pod.name, c.name),
        netns: handle.netns_name.clone(),
        argv: c.argv.clone(),
        env,
        working_dir: c.working_dir.as_ref().map(PathBuf::from),
        log: layout.container_log(&pod.namespace, &pod.name, &c.name),
        layout: layout.clone(),
    }
}

/// A pod's `/etc/resolv.conf`: cluster search domains; the nameserver's
/// queries are captured by ztunnel's DNS proxy (enrolled pods).
pub(super) fn resolv_conf(namespace: &str) -> String {
    format!(
        "search {namespace}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {DNS_IP}\noptions ndots:5\n"
    )
}
