//! Two nodes, a pod on each: TCP crosses from pod to pod over the simulated
//! fabric with the pod's own source address, sockets created inside a pod's
//! namespace keep working from the test's runtime, and everything is removed
//! on drop. Needs root: fails (never skips) without it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use mesh_netns::{NodeSpec, PodSpec, Topology, require_root};

fn two_nodes_two_pods() -> (Vec<NodeSpec>, Vec<PodSpec>) {
    let nodes = vec![NodeSpec { name: "a".into() }, NodeSpec { name: "b".into() }];
    let pods = vec![
        PodSpec { node: "a".into(), namespace: "default".into(), name: "client".into() },
        PodSpec { node: "b".into(), namespace: "default".into(), name: "server".into() },
    ];
    (nodes, pods)
}

#[test]
fn pods_on_two_nodes_talk_with_their_own_addresses() {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    let prefix = format!("mt{}", std::process::id() % 100_000);
    let (nodes, pods) = two_nodes_two_pods();
    let topology = Topology::build(&prefix, &nodes, &pods).unwrap();
    let client = topology.pod("default", "client").unwrap().clone();
    let server = topology.pod("default", "server").unwrap().clone();
    assert_ne!(client.ip, server.ip);

    // Bind inside the server pod, then serve from an ordinary thread.
    let listener: TcpListener =
        server.netns().unwrap().run(|| TcpListener::bind((server.ip, 8080))).unwrap().unwrap();
    let accept = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
        peer
    });

    let target = SocketAddr::from((server.ip, 8080));
    let mut conn: TcpStream =
        client.netns().unwrap().run(move || TcpStream::connect(target)).unwrap().unwrap();
    conn.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    let peer = accept.join().unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(client.ip),
        "the server sees the client pod's address"
    );

    assert!(!Topology::leftovers(&prefix).is_empty());
    drop(topology);
    assert!(Topology::leftovers(&prefix).is_empty(), "everything removed on drop");
}

#[test]
fn leftovers_of_a_crashed_run_are_found_and_removed() {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    let prefix = format!("mc{}", std::process::id() % 100_000);
    let (nodes, pods) = two_nodes_two_pods();
    let topology = Topology::build(&prefix, &nodes, &pods).unwrap();
    // Simulate a crash: the topology is never dropped.
    std::mem::forget(topology);
    assert_eq!(Topology::leftovers(&prefix).len(), 5, "fabric, two nodes, two pods");
    assert_eq!(Topology::remove_leftovers(&prefix).unwrap(), 5);
    assert!(Topology::leftovers(&prefix).is_empty());
}

#[test]
fn unknown_node_is_an_error_and_cleans_up() {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    let prefix = format!("mu{}", std::process::id() % 100_000);
    let nodes = vec![NodeSpec { name: "a".into() }];
    let pods = vec![PodSpec { node: "nope".into(), namespace: "default".into(), name: "x".into() }];
    let err = Topology::build(&prefix, &nodes, &pods).unwrap_err();
    assert!(err.to_string().contains("unknown node \"nope\""), "{err}");
    assert!(Topology::leftovers(&prefix).is_empty(), "a failed build leaves nothing behind");
}

#[test]
fn a_spawned_thread_stays_in_the_pod_namespace() {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    let prefix = format!("ms{}", std::process::id() % 100_000);
    let (nodes, pods) = two_nodes_two_pods();
    let topology = Topology::build(&prefix, &nodes, &pods).unwrap();
    let pod = topology.pod("default", "client").unwrap().clone();
    let (jobs, queue) = std::sync::mpsc::channel::<u16>();
    let (answers, results) = std::sync::mpsc::channel();
    let thread = pod
        .netns()
        .unwrap()
        .spawn("binder", move || {
            // Only the pod's namespace has the pod's address.
            for port in queue {
                answers.send(TcpListener::bind((pod.ip, port)).map(|l| l.local_addr())).unwrap();
            }
        })
        .unwrap();
    for port in [18080, 18081] {
        jobs.send(port).unwrap();
        assert_eq!(results.recv().unwrap().unwrap().unwrap().port(), port);
    }
    drop(jobs);
    thread.join().unwrap().unwrap();
    // The test's own thread is not in the pod.
    assert!(TcpListener::bind((topology.pod("default", "client").unwrap().ip, 18082)).is_err());
}
