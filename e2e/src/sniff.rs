//! A packet sniffer on every interface of a network namespace (the fabric,
//! where traffic between nodes crosses the bridge), looking for a marker:
//! bytes an application sent that must never be visible on the wire.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// Listens on all interfaces of the namespace (an unbound `AF_PACKET`
/// socket sees frames forwarded by a bridge on its ports) and prints each
/// frame that contains the needle.
const SNIFFER: &str = "\
import socket, sys
needle = sys.argv[1].encode()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
print('READY', flush=True)
while True:
    data = s.recv(65535)
    i = data.find(needle)
    if i >= 0:
        print('SEEN', repr(data[max(0, i - 120):i + 60]), flush=True)
";

/// A running sniffer; [`Sniffer::finish`] stops it and returns what it saw.
#[derive(Debug)]
pub struct Sniffer {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Sniffer {
    /// Starts sniffing in `netns` for `needle` and returns once it listens.
    pub fn start(netns: &str, needle: &str) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "python3", "-c", SNIFFER, needle])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the sniffer in {netns}: {e}"));
        let Some(stdout) = child.stdout.take() else { panic!("the sniffer has no stdout") };
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        // The sniffer prints READY at once (or dies, closing stdout).
        let read = stdout.read_line(&mut first);
        assert!(
            matches!(read, Ok(n) if n > 0) && first.trim() == "READY",
            "the sniffer in {netns} did not start: {read:?} {first:?}"
        );
        Self { child, stdout }
    }

    /// Stops the sniffer (after letting the last frames arrive) and returns
    /// every `SEEN` line: frames that carried the needle.
    pub fn finish(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        rest.lines().filter(|l| l.starts_with("SEEN")).map(str::to_owned).collect()
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
