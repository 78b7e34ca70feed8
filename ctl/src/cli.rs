//! Command-line parsing with clap: `ambientctl local <subcommand>`. Every
//! command answers `--help`; errors name the argument that is wrong.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The default state directory.
pub(crate) const DEFAULT_STATE: &str = "/var/run/ambient-mesh";
/// The default network namespace name prefix.
pub(crate) const DEFAULT_PREFIX: &str = "amesh";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpArgs {
    pub(crate) config: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) bin_dir: Option<PathBuf>,
    pub(crate) prefix: String,
}

/// What the user asked for, as the rest of the crate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Up(UpArgs),
    /// The detached supervisor `up` starts (not for users).
    Supervise(UpArgs),
    Status {
        state: PathBuf,
        json: bool,
    },
    Exec {
        state: PathBuf,
        pod: String,
        namespace: String,
        command: Vec<String>,
    },
    Logs {
        state: PathBuf,
        target: String,
        namespace: String,
        container: Option<String>,
    },
    Down {
        state: PathBuf,
    },
}

/// The mesh's command line.
#[derive(Debug, Parser)]
#[command(name = "ambientctl", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    group: Group,
}

#[derive(Debug, Subcommand)]
enum Group {
    /// The whole mesh on one machine (for development): istiod, a ztunnel and
    /// CNI agent per simulated node, pods run as root processes, from a
    /// directory of ordinary Kubernetes YAML.
    Local {
        #[command(subcommand)]
        command: Local,
    },
}

/// Where the mesh keeps its state, logs and generated config.
#[derive(Debug, Args)]
struct StateArg {
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE)]
    state: PathBuf,
}

#[derive(Debug, Args)]
struct UpFlags {
    /// Directory of Kubernetes YAML to run (watched for edits).
    #[arg(long, short = 'f', value_name = "DIR")]
    config: PathBuf,
    #[command(flatten)]
    state: StateArg,
    /// Where the istiod and ztunnel binaries are (default: next to ambientctl).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Network namespace name prefix (one mesh per prefix).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_PREFIX)]
    prefix: String,
}

impl From<UpFlags> for UpArgs {
    fn from(f: UpFlags) -> Self {
        Self { config: f.config, state: f.state.state, bin_dir: f.bin_dir, prefix: f.prefix }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Json,
}

#[derive(Debug, Subcommand)]
enum Local {
    /// Bring the mesh up from a directory of YAML and return once it is ready.
    Up(UpFlags),
    /// The detached supervisor that `up` starts.
    #[command(hide = true)]
    Supervise(UpFlags),
    /// Nodes, pods, IPs, readiness and config problems.
    Status {
        #[command(flatten)]
        state: StateArg,
        /// Output format.
        #[arg(long, short = 'o', value_enum)]
        output: Option<Format>,
    },
    /// Run a command inside a pod's network namespace.
    Exec {
        /// The pod's name.
        pod: String,
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
        #[command(flatten)]
        state: StateArg,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Print a log: a pod's container, `istiod`, `ztunnel/NODE` or `supervisor`.
    Logs {
        /// POD, istiod, ztunnel/NODE or supervisor.
        target: String,
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
        #[arg(long, short = 'c')]
        container: Option<String>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Stop every process and remove every namespace, rule and file `up` made.
    Down {
        #[command(flatten)]
        state: StateArg,
    },
}

/// Parses the process's arguments; on `--help`, `--version` or an error,
/// clap prints and exits (0 for help and version, 2 for a usage error).
pub(crate) fn parse_or_exit() -> Command {
    Cli::parse().into()
}

impl From<Cli> for Command {
    fn from(cli: Cli) -> Self {
        let Group::Local { command } = cli.group;
        match command {
            Local::Up(f) => Command::Up(f.into()),
            Local::Supervise(f) => Command::Supervise(f.into()),
            Local::Status { state, output } => {
                Command::Status { state: state.state, json: matches!(output, Some(Format::Json)) }
            }
            Local::Exec { pod, namespace, state, command } => {
                Command::Exec { state: state.state, pod, namespace, command }
            }
            Local::Logs { target, namespace, container, state } => {
                Command::Logs { state: state.state, target, namespace, container }
            }
            Local::Down { state } => Command::Down { state: state.state },
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(s: &str) -> Result<Command, ErrorKind> {
        let argv = std::iter::once("ambientctl").chain(s.split_whitespace());
        Cli::try_parse_from(argv).map(Command::from).map_err(|e| e.kind())
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_every_subcommand() {
        assert_eq!(
            parse("local up --config d --prefix t1").unwrap(),
            Command::Up(UpArgs {
                config: "d".into(),
                state: DEFAULT_STATE.into(),
                bin_dir: None,
                prefix: "t1".into()
            })
        );
        assert_eq!(
            parse("local exec client -n demo --state /s -- curl -s x").unwrap(),
            Command::Exec {
                state: "/s".into(),
                pod: "client".into(),
                namespace: "demo".into(),
                command: vec!["curl".into(), "-s".into(), "x".into()],
            }
        );
        assert_eq!(
            parse("local status -o json").unwrap(),
            Command::Status { state: DEFAULT_STATE.into(), json: true }
        );
        assert_eq!(
            parse("local logs server -c app").unwrap(),
            Command::Logs {
                state: DEFAULT_STATE.into(),
                target: "server".into(),
                namespace: "default".into(),
                container: Some("app".into()),
            }
        );
        assert_eq!(parse("local down --state=/x").unwrap(), Command::Down { state: "/x".into() });
    }

    #[test]
    fn help_is_not_an_error_and_bad_input_is() {
        for help in ["--help", "local --help", "local up --help", "local exec --help", "help"] {
            assert_eq!(parse(help).unwrap_err(), ErrorKind::DisplayHelp, "{help}");
        }
        assert_eq!(parse("local up").unwrap_err(), ErrorKind::MissingRequiredArgument);
        assert_eq!(parse("local up --config").unwrap_err(), ErrorKind::InvalidValue);
        assert_eq!(parse("local down extra").unwrap_err(), ErrorKind::UnknownArgument);
        assert_eq!(parse("local exec p").unwrap_err(), ErrorKind::MissingRequiredArgument);
        assert_eq!(parse("remote up").unwrap_err(), ErrorKind::InvalidSubcommand);
        assert_eq!(parse("local status -o yaml").unwrap_err(), ErrorKind::InvalidValue);
    }
}
