//! `ambientctl local` end to end, through the real binaries: a two-node
//! mesh from the `examples/local-demo` directory, traffic between pods on
//! different nodes through the ztunnels (mutual TLS, L4 policy), a policy
//! edit changing the running mesh, a bad edit that keeps it running, and
//! `down` leaving nothing behind, also after the supervisor was killed.
//! Needs root (fails, never skips, without it) and the istiod and ztunnel
//! binaries next to ambientctl (`cargo build --bins`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

const AMBIENTCTL: &str = env!("CARGO_BIN_EXE_ambientctl");

/// Fails unless the test can run: root, and istiod/ztunnel built beside ambientctl.
fn require() {
    mesh_netns::require_root().expect("this test needs root: run the suite as root (CI does)");
    let dir = Path::new(AMBIENTCTL).parent().unwrap();
    for bin in ["istiod", "ztunnel"] {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: run `cargo build --bins` (scripts/test.sh does) before the ctl tests",
            dir.join(bin).display()
        );
    }
}

/// A config directory (a copy of the demo), a state directory and a prefix.
struct Mesh {
    _dir: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
    prefix: String,
}

impl Mesh {
    fn new(tag: &str) -> Self {
        require();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/local-demo");
        for entry in std::fs::read_dir(demo).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                std::fs::copy(&path, config.join(path.file_name().unwrap())).unwrap();
            }
        }
        let state = dir.path().join("state");
        let prefix = format!("{tag}{}", std::process::id() % 10_000);
        // A crashed earlier run with the same pid must not block this one.
        mesh_netns::Topology::remove_leftovers(&prefix).unwrap();
        Self { _dir: dir, config, state, prefix }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(AMBIENTCTL);
        cmd.arg("local").args(args.get(..1).unwrap_or_default()).arg("--state").arg(&self.state);
        cmd.args(args.get(1..).unwrap_or_default());
        cmd.output().unwrap()
    }

    fn up(&self) -> Output {
        let config = self.config.to_str().unwrap();
        self.ctl(&["up", "--config", config, "--prefix", &self.prefix])
    }

    fn status(&self) -> Value {
        let out = self.ctl(&["status", "-o", "json"]);
        assert!(out.status.success(), "status: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `GET http://server.demo.svc.cluster.local/` from `pod`: whether it answered 200.
    fn get_from(&self, pod: &str) -> bool {
        let script = "import urllib.request as u; print(u.urlopen('http://server.demo.svc.cluster.local/', timeout=3).status)";
        let out = self.ctl(&["exec", pod, "-n", "demo", "--", "python3", "-c", script]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "200"
    }

    /// Waits up to `secs` for `get_from(pod) == want`.
    fn eventually(&self, pod: &str, want: bool, secs: u64) {
        for _ in 0..secs * 2 {
            if self.get_from(pod) == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "{pod} -> server: expected allowed={want} within {secs} s; status: {:#}",
            self.status()
        );
    }

    fn write(&self, file: &str, content: &str) {
        std::fs::write(self.config.join(file), content).unwrap();
    }

    /// Every pid the status names.
    fn pids(status: &Value) -> Vec<i32> {
        let mut pids = vec![status["supervisor_pid"].as_i64().unwrap()];
        pids.extend(status["istiod"]["pid"].as_i64());
        pids.extend(
            status["nodes"].as_array().unwrap().iter().filter_map(|n| n["ztunnel_pid"].as_i64()),
        );
        for pod in status["pods"].as_array().unwrap() {
            pids.extend(
                pod["containers"].as_array().unwrap().iter().filter_map(|c| c["pid"].as_i64()),
            );
        }
        pids.into_iter().map(|p| i32::try_from(p).unwrap()).collect()
    }

    /// `down` succeeds and nothing is left: namespaces, processes, files.
    fn down_leaves_nothing(&self, pids: &[i32]) {
        let out = self.ctl(&["down"]);
        assert!(out.status.success(), "down: {}", text(&out));
        let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let listed = String::from_utf8_lossy(&netns.stdout);
        let ours: Vec<&str> =
            listed.lines().filter(|l| l.starts_with(&format!("{}-", self.prefix))).collect();
        assert!(ours.is_empty(), "namespaces left: {ours:?}");
        for pid in pids {
            assert!(!running(*pid), "process {pid} still runs");
        }
        assert!(!self.state.exists(), "state directory left: {}", self.state.display());
        let etc: Vec<String> = std::fs::read_dir("/etc/netns")
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        assert!(etc.iter().all(|e| !e.starts_with(&self.prefix)), "/etc/netns left: {etc:?}");
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // A failed test still cleans up.
        let _ = self.ctl(&["down"]);
    }
}

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Running and not a zombie (reaping by init may lag).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

#[test]
fn two_node_mesh_carries_traffic_follows_policy_edits_and_goes_down_cleanly() {
    let mesh = Mesh::new("lt");
    // Outside the mesh, failing: restarted (OnFailure) with its output logged.
    mesh.write(
        "crashy.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: crashy\n  namespace: demo\n  labels: {istio.io/dataplane-mode: none}\n\
         spec:\n  nodeName: node-a\n  restartPolicy: OnFailure\n  containers:\n  - name: main\n    command: [sh, -c]\n\
         \x20   args: ['echo started $ME in $PWD; exit 3']\n    workingDir: /tmp\n\
         \x20   env: [{name: ME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\n",
    );
    let out = mesh.up();
    assert!(out.status.success(), "up: {}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    for expected in
        ["demo/client", "demo/server", "node-a", "node-b", "10.244.", "172.31.0.1:15014"]
    {
        assert!(shown.contains(expected), "up output lacks {expected}: {shown}");
    }
    let status = mesh.status();
    assert_eq!(status["phase"], "ready");
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|n| n["ready"] == true), "up returns with ready ztunnels: {status:#}");
    assert_eq!(status["istiod"]["ready"], true);
    for pod in status["pods"].as_array().unwrap() {
        assert_eq!(pod["enrolled"], pod["name"] != "crashy", "dataplane-mode decides: {pod:#}");
    }

    // A second `up` is refused (the supervisor holds the state's lock)
    // and changes nothing.
    let again = mesh.up();
    assert!(!again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("is in use: its mesh runs"), "{}", text(&again));
    assert_eq!(mesh.status()["supervisor_pid"], status["supervisor_pid"]);

    // client (node-a) -> server (node-b) by name, through both ztunnels.
    mesh.eventually("client", true, 10);
    assert!(!mesh.get_from("intruder"), "the policy allows only the client");

    // The server's ztunnel saw the client's identity over mutual TLS.
    let node_b =
        status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "node-b").unwrap();
    let metrics = Command::new("ip")
        .args(["netns", "exec", node_b["netns"].as_str().unwrap(), "python3", "-c"])
        .arg("import urllib.request as u; print(u.urlopen('http://127.0.0.1:15020/metrics').read().decode())")
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let opened = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("source_principal=\"spiffe://cluster.local/ns/demo/sa/client\"")
        })
        .unwrap_or_else(|| panic!("no connection from the client in node-b's metrics:\n{metrics}"));
    assert!(opened.contains("connection_security_policy=\"mutual_tls\""), "{opened}");

    // Editing the policy changes the running mesh.
    let policy = std::fs::read_to_string(mesh.config.join("policy.yaml")).unwrap();
    mesh.write("policy.yaml", &policy.replace("sa/client", "sa/intruder"));
    mesh.eventually("client", false, 15);
    mesh.eventually("intruder", true, 15);

    // A broken file is reported and the mesh keeps its last good config.
    mesh.write("broken.yaml", "kind: Pod\nmetadata: {name: [oops\n");
    let mut reported = Value::Null;
    for _ in 0..20 {
        reported = mesh.status()["config_errors"].clone();
        if reported.as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(reported.to_string().contains("broken.yaml"), "{reported}");
    assert!(mesh.get_from("intruder"), "the mesh still runs on the last good config");

    // The failing container was restarted, and its output is in its log.
    let crashy = |status: &Value| {
        status["pods"].as_array().unwrap().iter().find(|p| p["name"] == "crashy").unwrap()["containers"][0]
            .clone()
    };
    for _ in 0..40 {
        if crashy(&mesh.status())["restarts"].as_u64().unwrap() >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let container = crashy(&mesh.status());
    assert!(container["restarts"].as_u64().unwrap() >= 1, "{container:#}");
    assert!(container["last_exit"].as_str().unwrap().contains('3'), "{container:#}");
    let logs = mesh.ctl(&["logs", "crashy", "-n", "demo"]);
    assert!(logs.status.success(), "{}", text(&logs));
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("started crashy in /tmp"),
        "{}",
        text(&logs)
    );

    // Relabelling enrols and releases a pod while the mesh runs (the node
    // agent acts on the new labels), once the directory is valid again.
    std::fs::remove_file(mesh.config.join("broken.yaml")).unwrap();
    let crashy_enrolled = |status: &Value| {
        status["pods"].as_array().unwrap().iter().find(|p| p["name"] == "crashy").unwrap()["enrolled"]
            .as_bool()
            .unwrap()
    };
    let original = std::fs::read_to_string(mesh.config.join("crashy.yaml")).unwrap();
    for (label, want) in [("ambient", true), ("none", false)] {
        mesh.write(
            "crashy.yaml",
            &original.replace("dataplane-mode: none", &format!("dataplane-mode: {label}")),
        );
        let mut now = !want;
        for _ in 0..60 {
            now = crashy_enrolled(&mesh.status());
            if now == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if now != want {
            let log = mesh.ctl(&["logs", "supervisor"]);
            let log = String::from_utf8_lossy(&log.stdout).into_owned();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "crashy with dataplane-mode {label}: enrolled={now}; supervisor log (newest first):\n{}",
                tail.join("\n")
            );
        }
    }

    // A ztunnel that dies is restarted and its pods enrolled again.
    let ztunnel_b = |s: &Value| {
        s["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "node-b").unwrap()["ztunnel_pid"].clone()
    };
    let before = ztunnel_b(&mesh.status());
    let pid = i32::try_from(before.as_i64().unwrap()).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    mesh.eventually("intruder", true, 20);
    assert_ne!(ztunnel_b(&mesh.status()), before, "a new ztunnel serves node-b");

    let pids = Mesh::pids(&mesh.status());
    assert!(pids.len() >= 7, "supervisor, istiod, 2 ztunnels, 3 containers: {pids:?}");
    mesh.down_leaves_nothing(&pids);
}

#[test]
fn down_cleans_up_after_the_supervisor_is_killed() {
    let mesh = Mesh::new("lk");
    let out = mesh.up();
    assert!(out.status.success(), "up: {}", text(&out));
    // A pod added while running gets a namespace, an address, enrolment
    // and its containers; removed, its containers stop.
    mesh.write(
        "late.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: late, namespace: demo}\n\
         spec:\n  nodeName: node-a\n  serviceAccountName: client\n  containers:\n  - {name: idle, command: [sleep, infinity]}\n",
    );
    mesh.eventually("late", true, 20);
    let late =
        |s: &Value| s["pods"].as_array().unwrap().iter().find(|p| p["name"] == "late").cloned();
    // The status file follows within a supervisor tick or two.
    let mut added = late(&mesh.status()).unwrap();
    for _ in 0..40 {
        if added["enrolled"] == true && added["containers"][0]["running"] == true {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        added = late(&mesh.status()).unwrap();
    }
    assert_eq!(added["enrolled"], true, "{added:#}");
    assert_eq!(added["containers"][0]["running"], true, "{added:#}");
    assert!(added["ip"].as_str().unwrap().starts_with("10.244.0."), "{added:#}");
    std::fs::remove_file(mesh.config.join("late.yaml")).unwrap();
    let mut stopped = false;
    for _ in 0..40 {
        if late(&mesh.status()).unwrap()["containers"][0]["running"] == false {
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(stopped, "{:#}", mesh.status());

    let pids = Mesh::pids(&mesh.status());
    let supervisor = pids[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Its children live on in the namespaces until `down`.
    std::thread::sleep(Duration::from_millis(200));
    assert!(pids[1..].iter().any(|p| running(*p)));
    let status = mesh.ctl(&["status"]);
    assert!(!status.status.success(), "status reports the dead supervisor: {}", text(&status));
    mesh.down_leaves_nothing(&pids);
}

#[test]
fn down_cleans_up_after_up_is_killed_half_way() {
    let mesh = Mesh::new("lh");
    let config = mesh.config.to_str().unwrap().to_owned();
    let mut up = Command::new(AMBIENTCTL)
        .args(["local", "up", "--config", &config, "--prefix", &mesh.prefix, "--state"])
        .arg(&mesh.state)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill both once the namespaces exist, before the mesh is ready.
    let record = mesh.state.join("state.json");
    let mut supervisor = None;
    for _ in 0..200 {
        let netns = Path::new("/var/run/netns").join(format!("{}-fabric", mesh.prefix));
        if netns.exists() {
            let text = std::fs::read_to_string(&record).unwrap_or_default();
            let value: Value = serde_json::from_str(&text).unwrap_or_default();
            supervisor = value["supervisor"]["pid"].as_i64();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let supervisor = i32::try_from(supervisor.expect("the supervisor built namespaces")).unwrap();
    let kill = nix::sys::signal::Signal::SIGKILL;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor), kill).unwrap();
    up.kill().unwrap();
    up.wait().unwrap();
    // The record says it is not running: a new `up` refuses until `down`.
    let again = mesh.up();
    assert!(!again.status.success());
    assert!(text(&again).contains("local down"), "{}", text(&again));
    mesh.down_leaves_nothing(&[supervisor]);
}

#[test]
fn bad_input_is_refused_at_up_naming_file_and_object() {
    let mesh = Mesh::new("lb");
    mesh.write(
        "extra.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: nowhere, namespace: demo}\nspec:\n  containers: [{name: a, command: [sleep, '1']}]\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: demo}\n",
    );
    mesh.write("syntax.yaml", "kind: Service\nmetadata: {name: [x\n");
    let out = mesh.up();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "extra.yaml document 1 (Pod demo/nowhere): spec.nodeName: Required value",
        "extra.yaml document 2 (VirtualService demo/vs): unknown kind",
        "syntax.yaml document 1: YAML syntax error",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!mesh.state.join("state.json").exists(), "nothing was started");
    assert!(mesh_netns::Topology::leftovers(&mesh.prefix).is_empty());

    // What only istiod checks (CRD schemas) also refuses the start, naming
    // the user's file, and leaves nothing behind.
    for file in ["extra.yaml", "syntax.yaml"] {
        std::fs::remove_file(mesh.config.join(file)).unwrap();
    }
    let policy = std::fs::read_to_string(mesh.config.join("policy.yaml")).unwrap();
    mesh.write("policy.yaml", &policy.replace("action: ALLOW", "action: MAYBE"));
    let out = mesh.up();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}/policy.yaml", mesh.config.display());
    assert!(err.contains("istiod rejected the configuration"), "{err}");
    assert!(
        err.contains(&expected) && err.contains("spec.action: Invalid value: \"MAYBE\""),
        "{err}"
    );
    assert!(!mesh.state.exists(), "cleaned up after the refused start");
    assert!(mesh_netns::Topology::leftovers(&mesh.prefix).is_empty());
}

#[test]
fn up_refuses_a_state_directory_it_does_not_recognise() {
    let mesh = Mesh::new("lr");
    // Someone's own directory, with a `config` folder of their own.
    let theirs = mesh.state.join("config").join("important.yaml");
    std::fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    std::fs::write(&theirs, "precious").unwrap();
    let out = mesh.up();
    assert!(!out.status.success(), "up: {}", text(&out));
    assert!(text(&out).contains("is not a local mesh's state directory"), "{}", text(&out));
    assert!(!mesh.state.join("state.json").exists(), "nothing was recorded");
    assert!(mesh_netns::Topology::leftovers(&mesh.prefix).is_empty(), "nothing was started");
    let down = mesh.ctl(&["down"]);
    assert!(down.status.success(), "down: {}", text(&down));
    assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "precious");
}

#[test]
fn a_second_up_is_refused_while_the_first_runs_and_down_keeps_user_files() {
    let mesh = Mesh::new("ll");
    let config = mesh.config.to_str().unwrap().to_owned();
    let first = Command::new(AMBIENTCTL)
        .args(["local", "up", "--config", &config, "--prefix", &mesh.prefix, "--state"])
        .arg(&mesh.state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While the first is starting the mesh, a second `up` on the same
    // state directory (another prefix, so only the state is shared).
    let record = mesh.state.join("state.json");
    for _ in 0..500 {
        if record.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(record.exists(), "the first `up` recorded its mesh");
    let other = format!("{}x", mesh.prefix);
    let second = mesh.ctl(&["up", "--config", &config, "--prefix", &other]);
    assert!(!second.status.success(), "second up: {}", text(&second));
    assert!(text(&second).contains("is in use"), "{}", text(&second));
    assert!(mesh_netns::Topology::leftovers(&other).is_empty(), "the second started nothing");
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "the first up, undisturbed: {}", text(&first));
    assert_eq!(mesh.status()["phase"], "ready");

    // Files a user puts into the state directory, also into the mesh's
    // own log folder, survive `down`; everything of the mesh goes.
    let notes = mesh.state.join("notes.txt");
    let mine = mesh.state.join("logs").join("mine.txt");
    std::fs::write(&notes, "notes").unwrap();
    std::fs::write(&mine, "mine").unwrap();
    let pids = Mesh::pids(&mesh.status());
    let down = mesh.ctl(&["down"]);
    assert!(down.status.success(), "down: {}", text(&down));
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "notes");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "mine");
    let mut left: Vec<String> = Vec::new();
    for dir in [mesh.state.clone(), mesh.state.join("logs")] {
        for entry in std::fs::read_dir(dir).unwrap() {
            left.push(entry.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    left.sort();
    assert_eq!(
        left,
        ["logs", "mine.txt", "notes.txt"],
        "only the user's files (and their folder) stay"
    );
    for pid in pids {
        assert!(!running(pid), "process {pid} still runs");
    }
    assert!(mesh_netns::Topology::leftovers(&mesh.prefix).is_empty());
    // The directory is now someone's: a new `up` refuses it.
    let again = mesh.up();
    assert!(!again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("is not a local mesh's state directory"), "{}", text(&again));
}
