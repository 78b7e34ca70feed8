//! Waypoint references from `istio.io/use-waypoint` labels.

use std::collections::BTreeMap;

use mesh_proto::workload::{GatewayAddress, NamespacedHostname, gateway_address};

use super::{Config, label};

pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";
/// Label on waypoint Deployments, pods and Services created by istiod.
pub const GATEWAY_MANAGED_LABEL: &str = "gateway.istio.io/managed";
pub const MESH_CONTROLLER: &str = "istio.io-mesh-controller";
/// HBONE port of waypoints.
pub const HBONE_PORT: u32 = 15008;

/// Resolves the waypoint for an object in `namespace`: the object's own
/// label wins over its namespace's; `none` on the object disables it (even
/// if the namespace names one). `istio.io/use-waypoint-namespace`, read from
/// the same labels that named the waypoint, points at another namespace.
/// A waypoint itself (`gateway.istio.io/managed: istio.io-mesh-controller`)
/// never uses one, so a namespace label cannot loop it onto itself.
pub fn waypoint_for(
    cfg: &Config,
    namespace: &str,
    object_labels: Option<&BTreeMap<String, String>>,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Option<GatewayAddress> {
    if label(object_labels, GATEWAY_MANAGED_LABEL) == Some(MESH_CONTROLLER) {
        return None;
    }
    let source = if label(object_labels, USE_WAYPOINT_LABEL).is_some() {
        object_labels
    } else {
        namespace_labels
    };
    let name = label(source, USE_WAYPOINT_LABEL).filter(|n| !n.is_empty() && *n != "none")?;
    let wp_namespace =
        label(source, USE_WAYPOINT_NAMESPACE_LABEL).filter(|n| !n.is_empty()).unwrap_or(namespace);
    Some(GatewayAddress {
        destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
            namespace: wp_namespace.to_owned(),
            hostname: format!("{name}.{wp_namespace}.svc.{}", cfg.domain_suffix),
        })),
        hbone_mtls_port: HBONE_PORT,
    })
}
