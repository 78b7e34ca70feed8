//! `status`, `exec` and `logs`: reading a running mesh.

use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use super::error::Error;
use super::layout::Layout;
use super::record::{self, Phase, Record, Status};
use crate::output;

/// The running mesh's status, or why there is none.
fn load(layout: &Layout) -> Result<(Record, Status), Error> {
    let not_running = || {
        Error::State(format!(
            "no local mesh in {} (start one with `ambientctl local up --config DIR --state {}`)",
            layout.root.display(),
            layout.root.display()
        ))
    };
    let record: Record = record::load(&layout.record())?.ok_or_else(not_running)?;
    let status: Status = record::load(&layout.status())?.ok_or_else(not_running)?;
    Ok((record, status))
}

/// Human-readable status: nodes, pods, services, addresses, logs.
pub(crate) fn render(s: &Status) -> String {
    let mut out = String::new();
    let yes = |b: bool, y: &'static str, n: &'static str| if b { y } else { n };
    let _ = writeln!(
        out,
        "istiod: xDS/CA {}  monitoring http://{}/ready /metrics /debug/config_errors  (netns {}, {})",
        s.istiod.xds,
        s.istiod.monitoring,
        s.istiod.netns,
        yes(s.istiod.ready, "ready", "not ready")
    );
    let _ = writeln!(out, "nodes:");
    for n in &s.nodes {
        let _ = writeln!(
            out,
            "  {:<12} {:<15} ztunnel {:<9}  metrics {}",
            n.name,
            n.ip,
            yes(n.ready, "ready", "not ready"),
            n.metrics
        );
    }
    let _ = writeln!(out, "pods:");
    for p in &s.pods {
        let running = p.containers.iter().filter(|c| c.running).count();
        let restarts: u32 = p.containers.iter().map(|c| c.restarts).sum();
        let _ = writeln!(
            out,
            "  {:<24} {:<12} {:<15} {:<9} {:<10} {}/{} running, {} restart(s)  sa {}",
            format!("{}/{}", p.namespace, p.name),
            p.node,
            p.ip,
            yes(p.ready, "ready", "not ready"),
            yes(p.enrolled, "ambient", "no mesh"),
            running,
            p.containers.len(),
            restarts,
            p.service_account
        );
    }
    if !s.services.is_empty() {
        let _ = writeln!(out, "services:");
        for svc in &s.services {
            let _ = writeln!(
                out,
                "  {:<24} {}",
                format!("{}/{}", svc.namespace, svc.name),
                svc.cluster_ip
            );
        }
    }
    if !s.config_errors.is_empty() {
        let _ = writeln!(out, "configuration problems (the mesh runs on the last good config):");
        for e in &s.config_errors {
            let _ = writeln!(out, "  - {e}");
        }
    }
    let _ = write!(out, "logs: {}", s.logs.display());
    out
}

pub(crate) fn status(state: &Path, json: bool) -> Result<ExitCode, Error> {
    let layout = Layout::new(state);
    let (record, mut status) = load(&layout)?;
    let alive = record.supervisor.is_some_and(|s| s.alive());
    if !alive && status.phase == Phase::Ready {
        status.phase = Phase::Failed;
        status.error = Some("the supervisor is not running; run `ambientctl local down`".into());
    }
    if json {
        let text = serde_json::to_string_pretty(&status)
            .map_err(|e| Error::Json { path: layout.status(), message: e.to_string() })?;
        output::line(text);
    } else {
        let phase = match status.phase {
            Phase::Starting => "starting",
            Phase::Ready => "running",
            Phase::Failed => "failed",
        };
        output::line(format_args!(
            "local mesh {phase} (supervisor pid {}, config {})",
            status.supervisor_pid,
            status.config_dir.display()
        ));
        if let Some(e) = &status.error {
            output::line(format_args!("error: {e}"));
        }
        output::line(render(&status));
    }
    Ok(if alive { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub(crate) fn exec(
    state: &Path,
    namespace: &str,
    pod: &str,
    command: &[String],
) -> Result<ExitCode, Error> {
    let layout = Layout::new(state);
    let (_, status) = load(&layout)?;
    let found = status
        .pods
        .iter()
        .find(|p| p.namespace == namespace && p.name == pod)
        .ok_or_else(|| Error::State(format!("no pod {namespace}/{pod} in the local mesh")))?;
    let exit =
        Command::new("ip").args(["netns", "exec", &found.netns]).args(command).status().map_err(
            |source| Error::Spawn { what: format!("{command:?} in pod {namespace}/{pod}"), source },
        )?;
    let code = exit.code().or_else(|| exit.signal().map(|s| 128 + s)).unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

pub(crate) fn logs(
    state: &Path,
    namespace: &str,
    target: &str,
    container: Option<&str>,
) -> Result<ExitCode, Error> {
    let layout = Layout::new(state);
    let path: PathBuf = match target {
        "istiod" | "supervisor" => layout.component_log(target),
        t if t.starts_with("ztunnel/") => {
            layout.component_log(&format!("ztunnel-{}", t.trim_start_matches("ztunnel/")))
        }
        pod => {
            let (_, status) = load(&layout)?;
            let found =
                status.pods.iter().find(|p| p.namespace == namespace && p.name == pod).ok_or_else(
                    || Error::State(format!("no pod {namespace}/{pod} in the local mesh")),
                )?;
            let names: Vec<&str> = found.containers.iter().map(|c| c.name.as_str()).collect();
            let chosen = match (container, names.as_slice()) {
                (Some(c), _) if names.contains(&c) => c,
                (None, [only]) => only,
                _ => {
                    return Err(Error::State(format!(
                        "pod {namespace}/{pod} has containers {}; choose one with -c",
                        names.join(", ")
                    )));
                }
            };
            layout.container_log(namespace, pod, chosen)
        }
    };
    let text = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
    output::raw(&text);
    Ok(ExitCode::SUCCESS)
}
