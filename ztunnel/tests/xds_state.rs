//! The state handlers behind the xDS client's per-type state machine: a
//! response with good and bad resources is ACKed for the good ones and
//! NACKed naming the bad ones, and readers see the result at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::net::{IpAddr, SocketAddr};

use mesh_proto::discovery::{DeltaDiscoveryResponse, Resource};
use mesh_proto::{security, type_url, workload};
use mesh_xds::client::{Subscription, TypeState};
use prost::Message;
use prost_types::Any;
use ztunnel::policy::ConnectionInfo;
use ztunnel::state::{AddressHandler, AuthorizationHandler, Destination, StateHandle};

fn resource(name: &str, url: &str, value: Vec<u8>) -> Resource {
    Resource {
        name: name.into(),
        version: "v1".into(),
        resource: Some(Any { type_url: url.into(), value }),
        ..Default::default()
    }
}

fn response(url: &str, resources: Vec<Resource>) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: url.into(),
        nonce: "n1".into(),
        resources,
        ..Default::default()
    }
}

fn pod(uid: &str, ip: [u8; 4], policies: &[&str]) -> Vec<u8> {
    workload::Address {
        r#type: Some(workload::address::Type::Workload(workload::Workload {
            uid: uid.into(),
            name: uid.into(),
            namespace: "ns".into(),
            addresses: vec![ip.to_vec()],
            authorization_policies: policies.iter().map(|p| (*p).to_owned()).collect(),
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

#[test]
fn responses_flow_into_the_shared_state_and_policy() {
    let state = StateHandle::default();
    let mut addresses = TypeState::new(type_url::ADDRESS, Subscription::wildcard());
    let mut handler = AddressHandler::new(state.clone());
    let reply = addresses.on_response(
        response(
            type_url::ADDRESS,
            vec![
                resource("pod-a", type_url::ADDRESS, pod("pod-a", [10, 0, 0, 1], &["ns/deny-all"])),
                resource("pod-b", type_url::ADDRESS, b"\xff\xff".to_vec()),
            ],
        ),
        &mut handler,
    );
    let nack = reply.error_detail.expect("pod-b is NACKed");
    assert!(nack.message.contains("pod-b: undecodable"), "{}", nack.message);
    assert_eq!(addresses.versions().keys().collect::<Vec<_>>(), vec!["pod-a"]);

    let dest = state.read().resolve_destination("", SocketAddr::new([10, 0, 0, 1].into(), 80));
    let Destination::Workload { workload } = dest else { panic!("pod-a by IP: {dest:?}") };

    let conn = ConnectionInfo {
        source_identity: None,
        source_ip: IpAddr::from([10, 9, 9, 9]),
        destination_ip: IpAddr::from([10, 0, 0, 1]),
        destination_port: 80,
        destination_workload: &workload,
    };
    // Fail closed: the workload lists a policy that has not arrived yet.
    let decision = state.read().authorize(&conn);
    assert!(!decision.allowed, "a bound policy that is missing denies");
    assert_eq!(
        decision.reason.to_string(),
        "policy ns/deny-all is bound to the workload but not known"
    );

    let deny_all = security::Authorization {
        name: "deny-all".into(),
        namespace: "ns".into(),
        scope: security::Scope::WorkloadSelector as i32,
        action: security::Action::Deny as i32,
        rules: vec![security::Rule::default()],
        ..Default::default()
    };
    let mut policies = TypeState::new(type_url::AUTHORIZATION, Subscription::wildcard());
    let reply = policies.on_response(
        response(
            type_url::AUTHORIZATION,
            vec![resource("ns/deny-all", type_url::AUTHORIZATION, deny_all.encode_to_vec())],
        ),
        &mut AuthorizationHandler::new(state.clone()),
    );
    assert_eq!(reply.error_detail, None);
    let decision = state.read().still_allowed(&conn);
    assert!(!decision.allowed);
    assert_eq!(decision.reason.to_string(), "denied by policy ns/deny-all");
    assert_eq!(state.read().config_dump()["policies"][0]["key"], "ns/deny-all");
}
