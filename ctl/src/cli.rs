//! Command-line parsing: a handful of subcommands and flags, parsed by hand
//! so the binary stays small and every error says which argument is wrong.

use std::path::PathBuf;

pub(crate) const USAGE: &str = "usage:
  ambientctl local up --config DIR [--state DIR] [--bin-dir DIR] [--prefix NAME]
  ambientctl local status [--state DIR] [-o json]
  ambientctl local exec POD [-n NAMESPACE] [--state DIR] -- CMD [ARGS...]
  ambientctl local logs POD|istiod|ztunnel/NODE|supervisor [-n NAMESPACE] [-c CONTAINER] [--state DIR]
  ambientctl local down [--state DIR]

  --state      where the mesh keeps its state, logs and generated config
               (default /var/run/ambient-mesh)
  --bin-dir    where the istiod and ztunnel binaries are (default: next to ambientctl)
  --prefix     network namespace name prefix (default amesh; one mesh per prefix)";

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UsageError {
    #[error("expected `local` and a subcommand")]
    NoCommand,
    #[error("unknown subcommand {0:?}")]
    UnknownCommand(String),
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("unexpected argument {0:?}")]
    Unexpected(String),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("-o: only `json` is supported, got {0:?}")]
    Format(String),
}

/// Flags and positional arguments before an optional `--`.
#[derive(Debug, Default)]
struct Parsed {
    flags: Vec<(String, String)>,
    positional: Vec<String>,
    rest: Vec<String>,
}

impl Parsed {
    fn take(&mut self, names: &[&str]) -> Option<String> {
        let at = self.flags.iter().rposition(|(k, _)| names.contains(&k.as_str()))?;
        Some(self.flags.remove(at).1)
    }

    fn finish(self) -> Result<(), UsageError> {
        match (self.flags.first(), self.positional.first()) {
            (Some((flag, _)), _) => Err(UsageError::Unexpected(flag.clone())),
            (None, Some(arg)) => Err(UsageError::Unexpected(arg.clone())),
            (None, None) => Ok(()),
        }
    }
}

fn split(args: &[String], boolean: &[&str]) -> Result<Parsed, UsageError> {
    let mut parsed = Parsed::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            parsed.rest = iter.cloned().collect();
            break;
        }
        if let Some((flag, value)) = arg.split_once('=').filter(|(f, _)| f.starts_with('-')) {
            parsed.flags.push((flag.to_owned(), value.to_owned()));
        } else if boolean.contains(&arg.as_str()) {
            parsed.flags.push((arg.clone(), String::new()));
        } else if arg.starts_with('-') && arg.len() > 1 {
            let value = iter.next().ok_or_else(|| UsageError::MissingValue(arg.clone()))?;
            parsed.flags.push((arg.clone(), value.clone()));
        } else {
            parsed.positional.push(arg.clone());
        }
    }
    Ok(parsed)
}

pub(crate) fn parse(args: &[String]) -> Result<Command, UsageError> {
    let (group, sub, rest) = match args {
        [group, sub, rest @ ..] => (group, sub, rest),
        _ => return Err(UsageError::NoCommand),
    };
    if group != "local" {
        return Err(UsageError::UnknownCommand(group.clone()));
    }
    let mut p = split(rest, &[])?;
    let state = PathBuf::from(p.take(&["--state"]).unwrap_or_else(|| DEFAULT_STATE.to_owned()));
    let command = match sub.as_str() {
        "up" | "supervise" => {
            let up = UpArgs {
                config: p
                    .take(&["--config", "-f"])
                    .ok_or(UsageError::Missing("--config DIR"))?
                    .into(),
                state,
                bin_dir: p.take(&["--bin-dir"]).map(PathBuf::from),
                prefix: p.take(&["--prefix"]).unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
            };
            if sub == "up" { Command::Up(up) } else { Command::Supervise(up) }
        }
        "status" => {
            let json = match p.take(&["-o", "--output"]) {
                None => false,
                Some(f) if f == "json" => true,
                Some(f) => return Err(UsageError::Format(f)),
            };
            Command::Status { state, json }
        }
        "exec" => {
            let namespace = p.take(&["-n", "--namespace"]).unwrap_or_else(|| "default".into());
            let pod = pod_arg(&mut p, "POD")?;
            let command = std::mem::take(&mut p.rest);
            if command.is_empty() {
                return Err(UsageError::Missing("-- CMD"));
            }
            Command::Exec { state, pod, namespace, command }
        }
        "logs" => {
            let namespace = p.take(&["-n", "--namespace"]).unwrap_or_else(|| "default".into());
            let container = p.take(&["-c", "--container"]);
            let target = pod_arg(&mut p, "POD")?;
            Command::Logs { state, target, namespace, container }
        }
        "down" => Command::Down { state },
        other => return Err(UsageError::UnknownCommand(other.to_owned())),
    };
    p.finish()?;
    Ok(command)
}

fn pod_arg(p: &mut Parsed, what: &'static str) -> Result<String, UsageError> {
    if p.positional.is_empty() {
        return Err(UsageError::Missing(what));
    }
    Ok(p.positional.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_every_subcommand() {
        assert_eq!(
            parse(&args("local up --config d --prefix t1")).unwrap(),
            Command::Up(UpArgs {
                config: "d".into(),
                state: DEFAULT_STATE.into(),
                bin_dir: None,
                prefix: "t1".into()
            })
        );
        assert_eq!(
            parse(&args("local exec client -n demo --state /s -- curl -s x")).unwrap(),
            Command::Exec {
                state: "/s".into(),
                pod: "client".into(),
                namespace: "demo".into(),
                command: args("curl -s x"),
            }
        );
        assert_eq!(
            parse(&args("local status -o json")).unwrap(),
            Command::Status { state: DEFAULT_STATE.into(), json: true }
        );
        assert_eq!(
            parse(&args("local logs server -c app")).unwrap(),
            Command::Logs {
                state: DEFAULT_STATE.into(),
                target: "server".into(),
                namespace: "default".into(),
                container: Some("app".into()),
            }
        );
        assert_eq!(
            parse(&args("local down --state=/x")).unwrap(),
            Command::Down { state: "/x".into() }
        );
    }

    #[test]
    fn errors_name_the_argument() {
        assert_eq!(parse(&args("local up")), Err(UsageError::Missing("--config DIR")));
        assert_eq!(
            parse(&args("local up --config")),
            Err(UsageError::MissingValue("--config".into()))
        );
        assert_eq!(parse(&args("local down extra")), Err(UsageError::Unexpected("extra".into())));
        assert_eq!(parse(&args("local exec p")), Err(UsageError::Missing("-- CMD")));
        assert_eq!(parse(&args("remote up")), Err(UsageError::UnknownCommand("remote".into())));
        assert_eq!(parse(&args("local status -o yaml")), Err(UsageError::Format("yaml".into())));
    }
}
