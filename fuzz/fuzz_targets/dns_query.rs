//! A packet as ztunnel's DNS proxy receives it from a pod: parsed, matched
//! against the mesh's names, answered or dropped. With no upstreams the
//! forward path fails at once (SERVFAIL), so every input is handled
//! without the network. A response must parse and carry the query's id,
//! and over UDP fit the classic 512-byte limit unless the query used EDNS.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mesh_proto::workload as pb;
use ztunnel::dns::{Client, DnsConfig, DnsMetrics, DnsServer, Transport, UpstreamSockets};
use ztunnel::state::StateHandle;

fn service(name: &str, host: &str, vips: &[[u8; 4]]) -> pb::Address {
    pb::Address {
        r#type: Some(pb::address::Type::Service(pb::Service {
            name: name.into(),
            namespace: "default".into(),
            hostname: host.into(),
            addresses: vips
                .iter()
                .map(|v| pb::NetworkAddress {
                    network: String::new(),
                    address: v.to_vec(),
                    length: None,
                })
                .collect(),
            ..Default::default()
        })),
    }
}

fn server() -> &'static (tokio::runtime::Runtime, DnsServer) {
    static SERVER: OnceLock<(tokio::runtime::Runtime, DnsServer)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let state = StateHandle::default();
        for (name, host, vips) in [
            ("web", "web.default.svc.cluster.local", &[[10, 96, 0, 1]][..]),
            ("api", "api.example.com", &[[240, 240, 1, 2]][..]),
            ("wild", "*.wild.example.com", &[[192, 0, 2, 1]][..]),
            ("headless", "headless.default.svc.cluster.local", &[][..]),
        ] {
            let address = mesh_model::Address::try_from(service(name, host, vips)).unwrap();
            state.write(|s| s.insert_address(&format!("default/{host}"), address)).unwrap();
        }
        let server =
            DnsServer::new(state, DnsConfig::new(Vec::new()), Arc::new(DnsMetrics::default()));
        (runtime, server)
    })
}

fuzz_target!(|data: &[u8]| {
    let (runtime, server) = server();
    let client = Client {
        workload_uid: "fuzz".into(),
        namespace: "default".into(),
        sockets: UpstreamSockets::host(),
    };
    for transport in [Transport::Udp, Transport::Tcp] {
        let Some(reply) = runtime.block_on(server.handle(&client, data, transport)) else {
            continue;
        };
        let parsed = hickory_proto::op::Message::from_vec(&reply).expect("our response parses");
        assert_eq!(data.get(..2), Some(&parsed.metadata.id.to_be_bytes()[..]), "same id");
        let query = hickory_proto::op::Message::from_vec(data).expect("answered, so it parsed");
        if transport == Transport::Udp {
            assert!(reply.len() <= usize::from(query.max_payload()), "fits the client's UDP size");
        }
    }
});
