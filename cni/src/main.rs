//! `mesh-cni`: the chained CNI plugin when the runtime invokes it (with
//! `CNI_COMMAND` set), else the node agent (`mesh-cni agent`).
#![forbid(unsafe_code)]

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use mesh_cni::Backend;
use mesh_cni::agent::{Agent, AgentConfig};
use mesh_cni::plugin::{self, CniEnv};
use mesh_cni::report::DEFAULT_AGENT_SOCKET;
use mesh_cni::zds::DEFAULT_SOCKET_PATH;

const USAGE: &str = "usage: mesh-cni agent [--node-name NAME] [--zds-socket PATH] \
[--cni-socket PATH] [--backend iptables|nftables] [--no-dns-capture]
  (NODE_NAME is read from the environment when --node-name is absent)
As a CNI plugin the runtime runs it with CNI_COMMAND set and the network config on stdin.";

#[allow(clippy::print_stderr, reason = "errors before or without logging go to stderr")]
fn fail(message: &str) -> ExitCode {
    eprintln!("mesh-cni: {message}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    if std::env::var_os("CNI_COMMAND").is_some() {
        return cni_plugin();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((cmd, _)) if matches!(cmd.as_str(), "-h" | "--help" | "help") => help(),
        Some((cmd, rest)) if cmd == "agent" && rest.iter().any(|a| a == "-h" || a == "--help") => {
            help()
        }
        Some((cmd, rest)) if cmd == "agent" => match parse_agent(rest) {
            Ok(options) => agent(options),
            Err(e) => fail(&format!("{e}\n{USAGE}")),
        },
        _ => fail(USAGE),
    }
}

#[allow(clippy::print_stdout, reason = "--help prints its usage on stdout")]
fn help() -> ExitCode {
    println!("mesh-cni: the ambient mesh's CNI node agent and chained CNI plugin.\n{USAGE}");
    ExitCode::SUCCESS
}

fn cni_plugin() -> ExitCode {
    let mut stdin = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut stdin) {
        return fail(&format!("reading the network config: {e}"));
    }
    let env = CniEnv::from_lookup(|k| std::env::var(k).ok());
    let outcome = plugin::run(&env, &stdin);
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(outcome.stdout.as_bytes()).and_then(|()| out.flush()) {
        return fail(&format!("writing the result: {e}"));
    }
    if outcome.success { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[derive(Debug)]
struct AgentOptions {
    node_name: Option<String>,
    config: AgentConfig,
}

fn parse_agent(args: &[String]) -> Result<AgentOptions, String> {
    let mut config = AgentConfig::new(DEFAULT_SOCKET_PATH);
    config.cni_socket = Some(PathBuf::from(DEFAULT_AGENT_SOCKET));
    config.scan_proc = true;
    let mut node_name = std::env::var("NODE_NAME").ok();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--node-name" => node_name = Some(value()?),
            "--zds-socket" => config.zds_socket = value()?.into(),
            "--cni-socket" => config.cni_socket = Some(value()?.into()),
            "--backend" => {
                config.backend = match value()?.as_str() {
                    "iptables" => Backend::Iptables,
                    "nftables" => Backend::Nftables,
                    other => return Err(format!("unknown backend {other:?}")),
                }
            }
            "--no-dns-capture" => config.capture.redirect_dns = false,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(AgentOptions { node_name, config })
}

fn agent(options: AgentOptions) -> ExitCode {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    if let Err(e) = mesh_telemetry::logging::init(&filter, Default::default()) {
        return fail(&format!("setting up logging: {e}"));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("starting the tokio runtime: {e}")),
    };
    runtime.block_on(run_agent(options))
}

#[cfg(feature = "kube")]
async fn run_agent(options: AgentOptions) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let Some(node_name) = options.node_name else {
        return fail("the node name is needed (--node-name or NODE_NAME)");
    };
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => return fail(&format!("kubernetes client: {e}")),
    };
    let source = mesh_cni::agent::kube::KubePods { client, node_name };
    let agent = match Agent::start(options.config, source).await {
        Ok(agent) => agent,
        Err(e) => return fail(&e.to_string()),
    };
    let (mut term, mut int) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => return fail(&format!("installing signal handlers: {e}")),
        };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Pods stay captured: a restarted agent re-adopts them.
    tracing::info!("stopping; enrolled pods stay enrolled");
    agent.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(not(feature = "kube"))]
async fn run_agent(_options: AgentOptions) -> ExitCode {
    fail("built without the kube feature: the agent binary needs Kubernetes")
}
