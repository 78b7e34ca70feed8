//! Socket helpers: marks, transparent sockets, reusable listeners inside a
//! namespace, and descriptors passed over SEQPACKET sockets. Needs root
//! (CAP_NET_ADMIN): fails (never skips) without it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;

use mesh_netns::fdpass::{recv_with_fds, send_with_fds};
use mesh_netns::socket::{
    PROXY_MARK, bind_reusable, seqpacket_accept, seqpacket_connect, seqpacket_listen, set_mark,
    set_transparent,
};
use mesh_netns::{Netns, NodeSpec, PodSpec, Topology, require_root};
use nix::sys::socket::{getsockopt, sockopt};

#[test]
fn mark_and_transparent_are_set() {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    let listener = bind_reusable(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    set_mark(&listener, PROXY_MARK).unwrap();
    set_transparent(&listener).unwrap();
    assert_eq!(getsockopt(&listener.as_fd(), sockopt::Mark).unwrap(), 1337);
    assert!(getsockopt(&listener.as_fd(), sockopt::IpTransparent).unwrap());
    assert!(getsockopt(&listener.as_fd(), sockopt::ReusePort).unwrap());
}

#[test]
fn two_reusable_listeners_share_a_port() {
    let first = bind_reusable(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    let addr = first.local_addr().unwrap();
    let second = bind_reusable(addr).unwrap();
    assert_eq!(second.local_addr().unwrap(), addr);
    TcpStream::connect(addr).unwrap();
}

#[test]
fn a_netns_passed_over_a_seqpacket_socket_is_the_same_namespace() {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    let prefix = format!("ms{}", std::process::id() % 100_000);
    let nodes = vec![NodeSpec { name: "a".into() }];
    let pods = vec![PodSpec { node: "a".into(), namespace: "default".into(), name: "p".into() }];
    let topology = Topology::build(&prefix, &nodes, &pods).unwrap();
    let pod = topology.pod("default", "p").unwrap().clone();

    let dir = std::env::temp_dir().join(format!("mesh-netns-fdpass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let listener = seqpacket_listen(&path).unwrap();
    let client = seqpacket_connect(&path).unwrap();
    let server = seqpacket_accept(&listener).unwrap();

    let netns = pod.netns().unwrap();
    send_with_fds(client.as_fd(), b"ns", &[netns.file().as_fd()]).unwrap();
    let mut buf = [0u8; 16];
    let got = recv_with_fds(server.as_fd(), &mut buf).unwrap();
    assert_eq!((&buf[..got.len], got.truncated, got.fds_truncated), (&b"ns"[..], false, false));
    assert_eq!(got.fds.len(), 1);
    let received = Netns::from_fd(got.fds.into_iter().next().unwrap());
    // Same namespace: its addresses include the pod's.
    let pod_ip = pod.ip;
    let bound = received
        .run(move || std::net::TcpListener::bind((pod_ip, 0)).map(|l| l.local_addr()))
        .unwrap();
    assert!(bound.is_ok(), "the received namespace owns the pod's address");

    // A packet larger than the buffer is reported as truncated.
    send_with_fds(client.as_fd(), &[7u8; 64], &[]).unwrap();
    let got = recv_with_fds(server.as_fd(), &mut buf).unwrap();
    assert!(got.truncated);

    // Many descriptors at once all arrive as owned descriptors.
    let files: Vec<_> = (0..8).map(|_| std::fs::File::open("/dev/null").unwrap()).collect();
    let fds: Vec<_> = files.iter().map(AsFd::as_fd).collect();
    send_with_fds(client.as_fd(), b"x", &fds).unwrap();
    let got = recv_with_fds(server.as_fd(), &mut buf).unwrap();
    assert!(!got.fds_truncated);
    assert_eq!(got.fds.len(), 8);

    // A closed peer reads as an empty packet.
    drop(client);
    let got = recv_with_fds(server.as_fd(), &mut buf).unwrap();
    assert_eq!(got.len, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
