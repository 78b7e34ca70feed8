//! The rule set in a real pod namespace: outbound TCP lands on 15001 with
//! its original destination intact, the proxy's marked sockets bypass it,
//! inbound lands on 15006 except HBONE's 15008, and removal restores direct
//! traffic and leaves no trace. Needs root: fails (never skips) without it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use mesh_cni::{Backend, CaptureConfig, RuleSet, iptables, nftables, routes, rules};
use mesh_netns::socket::{PROXY_MARK, bind_reusable, original_destination, set_mark};
use mesh_netns::{NodeSpec, PodHandle, PodSpec, Topology, require_root};

fn topology(prefix: &str) -> Topology {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    let nodes = vec![NodeSpec { name: "a".into() }, NodeSpec { name: "b".into() }];
    let pods = vec![
        PodSpec { node: "a".into(), namespace: "default".into(), name: "client".into() },
        PodSpec { node: "b".into(), namespace: "default".into(), name: "server".into() },
    ];
    Topology::build(prefix, &nodes, &pods).unwrap()
}

fn listen(pod: &PodHandle, port: u16) -> TcpListener {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = pod.netns().unwrap().bind_tcp(addr).unwrap().unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

/// Connects from inside `pod`, optionally with the proxy's mark, and says
/// hello.
fn connect(pod: &PodHandle, target: SocketAddr, mark: bool) -> std::io::Result<TcpStream> {
    pod.netns()
        .unwrap()
        .run(move || {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            if mark {
                set_mark(&socket, PROXY_MARK)?;
            }
            socket.connect_timeout(&target.into(), Duration::from_secs(3))?;
            let mut stream: TcpStream = socket.into();
            stream.write_all(b"hello")?;
            Ok(stream)
        })
        .unwrap()
}

/// Accepts the pending connection on `listener` within a few seconds, reads
/// the hello and returns the stream.
fn accept(listener: &TcpListener) -> Option<TcpStream> {
    for _ in 0..50 {
        match listener.accept() {
            Ok((mut conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 5];
                conn.read_exact(&mut buf).unwrap();
                assert_eq!(&buf, b"hello");
                return Some(conn);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

fn nothing_pending(listener: &TcpListener) -> bool {
    matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[test]
fn iptables_rules_redirect_capture_and_remove_cleanly() {
    let prefix = format!("ci{}", std::process::id() % 100_000);
    let topology = topology(&prefix);
    let client_ns = topology.pod("default", "client").unwrap().netns().unwrap();

    let rules = RuleSet::new(&CaptureConfig::default());
    iptables::apply(&client_ns, &rules).unwrap();
    let saved = iptables::save(&client_ns).unwrap();
    assert!(saved.contains("-A OUTPUT -j MESH_OUTPUT"), "{saved}");
    assert!(saved.contains("--to-ports 15001"), "{saved}");
    // Idempotent: applying again leaves the same rules (one jump each).
    Backend::Iptables.apply(&client_ns, &CaptureConfig::default()).unwrap();
    let again = iptables::save(&client_ns).unwrap();
    assert_eq!(again.matches("-A OUTPUT -j MESH_OUTPUT").count(), 3, "mangle, nat, raw: {again}");
    assert_eq!(again.matches("-A MESH_").count(), saved.matches("-A MESH_").count());

    exercise(&topology, Backend::Iptables);

    let saved = iptables::save(&client_ns).unwrap();
    assert!(!rules::has_trace(&saved), "{saved}");
    drop(topology);
    assert!(Topology::leftovers(&prefix).is_empty());
}

#[test]
fn nftables_rules_redirect_capture_and_remove_cleanly() {
    let prefix = format!("cn{}", std::process::id() % 100_000);
    let topology = topology(&prefix);
    let client_ns = topology.pod("default", "client").unwrap().netns().unwrap();

    Backend::Nftables.apply(&client_ns, &CaptureConfig::default()).unwrap();
    // Atomic replace: applying again leaves one table with the same rules.
    let saved = nftables::save(&client_ns).unwrap();
    Backend::Nftables.apply(&client_ns, &CaptureConfig::default()).unwrap();
    assert_eq!(nftables::save(&client_ns).unwrap(), saved);
    assert!(nftables::has_trace(&saved), "{saved}");

    exercise(&topology, Backend::Nftables);

    let saved = nftables::save(&client_ns).unwrap();
    assert!(!nftables::has_trace(&saved), "{saved}");
    drop(topology);
    assert!(Topology::leftovers(&prefix).is_empty());
}

/// `ip -n <pod> args...`'s stdout; the command must succeed.
fn ip_out(pod: &PodHandle, args: &[&str]) -> String {
    let out =
        std::process::Command::new("ip").args(["-n", &pod.netns_name]).args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// With `backend`'s rules installed in the client pod: checks capture,
/// bypass and exemptions, then removes the rules and checks direct traffic.
fn exercise(topology: &Topology, backend: Backend) {
    let client = topology.pod("default", "client").unwrap().clone();
    let server = topology.pod("default", "server").unwrap().clone();
    let client_ns = client.netns().unwrap();
    assert!(backend.installed(&client_ns).unwrap());
    // Policy routing for transparent sockets, once per family even after
    // repeated applies.
    let cfg = CaptureConfig::default();
    backend.apply(&client_ns, &cfg).unwrap();
    assert!(routes::installed(&client_ns, &cfg).unwrap());
    for family in ["-4", "-6"] {
        let rules = ip_out(&client, &[family, "rule", "show"]);
        assert_eq!(
            rules.matches("32764:\tfrom all fwmark 0x111/0xfff lookup 100").count(),
            1,
            "{family}: {rules}"
        );
        let table = ip_out(&client, &[family, "route", "show", "table", "100"]);
        assert!(table.contains("local default dev lo"), "{family}: {table}");
    }

    let outbound = listen(&client, 15001);
    let inbound = listen(&client, 15006);
    let hbone = listen(&client, 15008);
    let app_in_client = listen(&client, 8080);
    let app = listen(&server, 8080);
    let server_app = SocketAddr::from((server.ip, 8080));

    // Outbound from the app: lands on 15001 with the original destination.
    let _c = connect(&client, server_app, false).unwrap();
    let captured = accept(&outbound).expect("outbound connection captured on 15001");
    assert_eq!(original_destination(&captured).unwrap(), server_app);
    assert!(nothing_pending(&app), "the server pod saw nothing");

    // The proxy's own sockets (mark 1337) go straight through.
    let _c = connect(&client, server_app, true).unwrap();
    accept(&app).expect("marked connection reaches the server pod directly");
    assert!(nothing_pending(&outbound));

    // Inbound to the client pod: lands on 15006 with the original
    // destination; HBONE on 15008 is left alone.
    let client_app = SocketAddr::from((client.ip, 8080));
    let _c = connect(&server, client_app, false).unwrap();
    let captured = accept(&inbound).expect("inbound connection captured on 15006");
    assert_eq!(original_destination(&captured).unwrap(), client_app);
    assert!(nothing_pending(&app_in_client));
    let _c = connect(&server, SocketAddr::from((client.ip, 15008)), false).unwrap();
    accept(&hbone).expect("15008 is not redirected");
    assert!(nothing_pending(&inbound));

    // IPv6: the pod gets a ULA address; outbound to a neighbour in its
    // subnet is redirected to [::1]:15001 with IPv6 original destination.
    let status = std::process::Command::new("ip")
        .args(["-n", &client.netns_name, "addr", "add", "fd00:10::2/64", "dev", "eth0", "nodad"])
        .status()
        .unwrap();
    assert!(status.success());
    let outbound6 = client_ns.bind_tcp("[::1]:15001".parse().unwrap()).unwrap().unwrap();
    outbound6.set_nonblocking(true).unwrap();
    let v6_target: SocketAddr = "[fd00:10::99]:8080".parse().unwrap();
    let _c = client_ns
        .run(move || {
            let mut stream = TcpStream::connect_timeout(&v6_target, Duration::from_secs(3))?;
            stream.write_all(b"hello")?;
            Ok::<_, std::io::Error>(stream)
        })
        .unwrap()
        .unwrap();
    let captured = accept(&outbound6).expect("IPv6 outbound captured on [::1]:15001");
    assert_eq!(original_destination(&captured).unwrap(), v6_target);

    // DNS over UDP to any resolver lands on the DNS proxy's 15053.
    let dns = client_ns
        .run(|| {
            let proxy = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 15053))?;
            proxy.set_read_timeout(Some(Duration::from_secs(3)))?;
            let app = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            app.send_to(b"query", (server.ip, 53))?;
            let mut buf = [0u8; 16];
            let (n, _) = proxy.recv_from(&mut buf)?;
            Ok::<_, std::io::Error>(buf[..n].to_vec())
        })
        .unwrap();
    assert_eq!(dns.unwrap(), b"query");

    // Removal restores direct traffic.
    backend.remove(&client_ns, &cfg).unwrap();
    assert!(!backend.installed(&client_ns).unwrap());
    assert!(!routes::installed(&client_ns, &cfg).unwrap());
    for family in ["-4", "-6"] {
        let rules = ip_out(&client, &[family, "rule", "show"]);
        assert!(!rules.contains("lookup 100"), "{family}: {rules}");
    }
    let _c = connect(&client, server_app, false).unwrap();
    accept(&app).expect("direct outbound after removal");
    assert!(nothing_pending(&outbound));
    let _c = connect(&server, client_app, false).unwrap();
    accept(&app_in_client).expect("direct inbound after removal");
    assert!(nothing_pending(&inbound));
    // Removing twice is fine.
    backend.remove(&client_ns, &cfg).unwrap();
}

#[test]
fn original_destination_of_an_unredirected_connection_is_an_error_or_itself() {
    require_root().expect("this test needs root: run the suite as root (CI does)");
    // Without any NAT, conntrack has no original tuple that differs; the
    // kernel reports ENOENT (or the address itself on some kernels).
    let listener = bind_reusable(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    let addr = listener.local_addr().unwrap();
    let _c = TcpStream::connect(addr).unwrap();
    let (conn, _) = listener.accept().unwrap();
    match original_destination(&conn) {
        Ok(dst) => assert_eq!(dst, addr),
        Err(e) => assert_eq!(e.raw_os_error(), Some(nix::libc::ENOENT), "{e}"),
    }
}
