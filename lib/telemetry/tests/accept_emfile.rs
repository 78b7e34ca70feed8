//! The admin server when the process is out of file descriptors: the
//! accept loop backs off instead of spinning, and serves again once
//! descriptors are free. Alone in its binary: it lowers the process's
//! RLIMIT_NOFILE.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::time::Duration;

use mesh_telemetry::admin::{AdminState, serve};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// User plus system CPU time of this process, read from `stat` (an open
/// `/proc/self/stat`: no descriptor may be free when this runs).
fn cpu_time(stat: &std::fs::File) -> Duration {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; 4096];
    let n = stat.read_at(&mut buf, 0).unwrap();
    let stat = String::from_utf8_lossy(&buf[..n]).into_owned();
    // Fields after the command name (which ends with ')').
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ = 100
}

fn highest_fd() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap()
}

/// Sets the soft descriptor limit with a plain system call: no file is
/// opened and no process spawned, so it works with every descriptor taken.
fn set_nofile(soft: u64, hard: u64) {
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_and_the_server_recovers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    tokio::spawn(serve(listener, AdminState::default()));
    let stat = std::fs::File::open("/proc/self/stat").unwrap();
    // Take every descriptor below a lowered limit, then give exactly one
    // back for the client's socket: the server's accept has none left.
    set_nofile(highest_fd() + 1, hard);
    let mut fillers = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        fillers.push(file);
    }
    assert!(!fillers.is_empty());
    fillers.pop();
    let mut client = TcpStream::connect(address).await.unwrap();
    let before = cpu_time(&stat);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let used = cpu_time(&stat).saturating_sub(before);
    drop(fillers);
    set_nofile(soft, hard);
    assert!(used < Duration::from_millis(400), "the accept loop spun: {used:?} of CPU in 1.5 s");

    // Descriptors are back: the waiting connection is served.
    client.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut response))
        .await
        .expect("served after the back-off")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}
