//! ZDS over a real SEQPACKET socket: hello, an Add carrying a pod's netns
//! fd that the proxy side enters to bind a listener the pod can reach,
//! Keep, Del, SnapshotSent, and the error acks for bad requests. The Add
//! part needs root (a pod namespace): fails (never skips) without it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use mesh_cni::zds::codec::{self, Request};
use mesh_cni::zds::{MAX_PACKET, WorkloadInfo, ZdsClient, ZdsError, ZdsRequest, ZdsServer};
use mesh_netns::{Netns, NodeSpec, PodSpec, Topology, require_root};

fn info() -> WorkloadInfo {
    WorkloadInfo {
        name: "client".into(),
        namespace: "default".into(),
        service_account: "sa".into(),
    }
}

/// A raw connection that has read the hello.
fn raw_connect(path: &Path) -> std::os::fd::OwnedFd {
    let sock = mesh_netns::socket::seqpacket_connect(path).unwrap();
    socket2::SockRef::from(&sock).set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let hello = codec::recv_packet(&sock).unwrap();
    codec::decode_hello(&hello.bytes).unwrap();
    sock
}

fn raw_request(
    sock: &std::os::fd::OwnedFd,
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<(), String> {
    codec::send_packet(sock.as_fd(), bytes, fds).unwrap();
    let reply = codec::recv_packet(sock).unwrap();
    codec::decode_ack(&reply.bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_keep_del_snapshot_round_trip_with_a_pod_netns() {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    let prefix = format!("cz{}", std::process::id() % 100_000);
    let nodes = vec![NodeSpec { name: "a".into() }];
    let pods =
        vec![PodSpec { node: "a".into(), namespace: "default".into(), name: "client".into() }];
    let topology = Topology::build(&prefix, &nodes, &pods).unwrap();
    let pod = topology.pod("default", "client").unwrap().clone();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ztunnel.sock");
    let (server, mut events) = ZdsServer::bind(&path, 8).unwrap();

    // The agent's side runs concurrently with the proxy's event loop below.
    let agent = {
        let path = path.clone();
        let netns_file = pod.netns().unwrap().file().try_clone().unwrap();
        tokio::spawn(async move {
            let mut client = ZdsClient::connect(&path).await.unwrap();
            client.add("uid-1", info(), &netns_file).await.unwrap();
            client.keep("uid-1").await.unwrap();
            let refused = client.del("uid-unknown").await.unwrap_err();
            assert!(
                matches!(&refused, ZdsError::Rejected(e) if e.contains("unknown pod uid-unknown")),
                "{refused}"
            );
            client.del("uid-1").await.unwrap();
            client.snapshot_sent().await.unwrap();
        })
    };

    // The proxy's side: enter the pod's namespace from the received fd and
    // bind a listener there.
    let event = events.recv().await.unwrap();
    assert!(matches!(event.request, ZdsRequest::Connected), "{:?}", event.request);
    let event = events.recv().await.unwrap();
    let ZdsRequest::Add { uid, info: got, netns } = event.request else {
        panic!("expected an Add, got {:?}", event.request)
    };
    assert_eq!((uid.as_str(), got), ("uid-1", info()));
    let pod_netns = Netns::from_fd(netns);
    let listener =
        pod_netns.bind_tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 15001))).unwrap().unwrap();
    event.responder.ack(Ok(()));

    // The pod reaches the listener on its own address and on localhost.
    for target in
        [SocketAddr::from((pod.ip, 15001)), SocketAddr::from((Ipv4Addr::LOCALHOST, 15001))]
    {
        let accept = std::thread::spawn({
            let listener = listener.try_clone().unwrap();
            move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 2];
                conn.read_exact(&mut buf).unwrap();
                buf
            }
        });
        let mut conn: TcpStream =
            pod.netns().unwrap().run(move || TcpStream::connect(target)).unwrap().unwrap();
        conn.write_all(b"hi").unwrap();
        assert_eq!(&accept.join().unwrap(), b"hi");
    }

    let event = events.recv().await.unwrap();
    assert!(
        matches!(&event.request, ZdsRequest::Keep { uid } if uid == "uid-1"),
        "{:?}",
        event.request
    );
    event.ack(Ok(()));
    let event = events.recv().await.unwrap();
    assert!(matches!(&event.request, ZdsRequest::Del { uid } if uid == "uid-unknown"));
    event.ack(Err("unknown pod uid-unknown".into()));
    let event = events.recv().await.unwrap();
    assert!(matches!(&event.request, ZdsRequest::Del { uid } if uid == "uid-1"));
    drop(listener);
    event.ack(Ok(()));
    let event = events.recv().await.unwrap();
    assert!(matches!(event.request, ZdsRequest::SnapshotSent));
    event.ack(Ok(()));

    agent.await.unwrap();
    drop(server);
    assert!(!path.exists(), "the socket file is removed on drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_error_acks_and_the_connection_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ztunnel.sock");
    let (_server, mut events) = ZdsServer::bind(&path, 8).unwrap();

    let proxy = tokio::spawn(async move {
        // Only well-formed requests get here; ack them all.
        let mut seen = Vec::new();
        while let Some(event) = events.recv().await {
            if matches!(event.request, ZdsRequest::Connected) {
                continue;
            }
            seen.push(format!("{:?}", event.request));
            event.ack(Ok(()));
            if seen.len() == 1 {
                return seen;
            }
        }
        seen
    });

    let path2 = path.clone();
    let raw = tokio::task::spawn_blocking(move || {
        let sock = raw_connect(&path2);
        let garbage = raw_request(&sock, b"\xff\xff\xff\xff", &[]).unwrap_err();
        assert!(garbage.contains("undecodable"), "{garbage}");

        let add = Request::Add { uid: "uid-1".into(), info: info() }.encode();
        let no_fd = raw_request(&sock, &add, &[]).unwrap_err();
        assert!(no_fd.contains("without a netns file descriptor"), "{no_fd}");

        let keep = Request::Keep { uid: "uid-1".into() }.encode();
        let file = std::fs::File::open("/dev/null").unwrap();
        let stray = raw_request(&sock, &keep, &[file.as_fd()]).unwrap_err();
        assert!(stray.contains("takes none"), "{stray}");

        let two = raw_request(&sock, &add, &[file.as_fd(), file.as_fd()]).unwrap_err();
        assert!(two.contains("more than one file descriptor"), "{two}");

        let no_uid = Request::Keep { uid: String::new() }.encode();
        let empty = raw_request(&sock, &no_uid, &[]).unwrap_err();
        assert!(empty.contains("without a uid"), "{empty}");

        let huge = vec![0x0a_u8; MAX_PACKET + 100];
        let too_large = raw_request(&sock, &huge, &[]).unwrap_err();
        assert!(too_large.contains("larger than"), "{too_large}");

        // Still usable: a good request goes through to the proxy.
        raw_request(&sock, &keep, &[]).unwrap();
    });
    raw.await.unwrap();
    let seen = proxy.await.unwrap();
    assert_eq!(seen, vec![r#"Keep { uid: "uid-1" }"#.to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_time_out_and_break_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ztunnel.sock");
    let (_server, mut events) = ZdsServer::bind(&path, 8).unwrap();
    let mut client =
        ZdsClient::connect_with_timeout(&path, Duration::from_millis(300)).await.unwrap();

    // A responder dropped unanswered is an error ack.
    let proxy = tokio::spawn(async move {
        let connected = events.recv().await.unwrap();
        assert!(matches!(connected.request, ZdsRequest::Connected));
        let dropped = events.recv().await.unwrap();
        drop(dropped);
        // Hold the next one past the client's timeout.
        let held = events.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        held.ack(Ok(()));
        events
    });
    let err = client.keep("uid-1").await.unwrap_err();
    assert!(matches!(&err, ZdsError::Rejected(e) if e.contains("dropped unanswered")), "{err}");
    let err = client.keep("uid-2").await.unwrap_err();
    assert!(matches!(err, ZdsError::Timeout(_)), "{err}");
    let err = client.snapshot_sent().await.unwrap_err();
    assert!(matches!(err, ZdsError::Broken), "{err}");
    proxy.await.unwrap();
}

#[tokio::test]
async fn binding_replaces_a_stale_socket_but_never_another_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/ztunnel/ztunnel.sock");
    let (first, _events) = ZdsServer::bind(&path, 1).unwrap();
    std::mem::forget(first); // a crashed proxy leaves its socket behind
    let (_second, _events) = ZdsServer::bind(&path, 1).unwrap();
    ZdsClient::connect(&path).await.unwrap();

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let err = ZdsServer::bind(&file, 1).unwrap_err();
    assert!(err.to_string().contains("not-a-socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[tokio::test]
async fn connecting_to_nothing_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let err = ZdsClient::connect(&path).await.unwrap_err();
    assert!(err.to_string().contains("nobody.sock"), "{err}");
}
