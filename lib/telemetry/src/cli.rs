//! The command line of a binary configured from environment variables
//! (istiod and ztunnel, like upstream's): it takes no arguments but
//! `--help` and `--version`, and refuses anything else instead of ignoring it.

use std::io::Write;
use std::process::ExitCode;

/// What `main` should do after looking at its arguments.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// No arguments: start.
    Run,
    /// Print this on standard output and exit 0 (`--help`, `--version`).
    Print(String),
    /// Print this on standard error and exit 2 (an argument we do not take).
    Usage(String),
}

impl Invocation {
    /// Classifies the arguments after the program name. `help` is the full
    /// text for `--help`: what the binary is and the variables it reads.
    pub fn from_args(
        name: &str,
        version: &str,
        help: &str,
        mut args: impl Iterator<Item = String>,
    ) -> Self {
        match args.next().as_deref() {
            None => Self::Run,
            Some("-h" | "--help" | "help") => Self::Print(help.to_owned()),
            Some("-V" | "--version") => Self::Print(format!("{name} {version}\n")),
            Some(other) => Self::Usage(format!(
                "{name}: unexpected argument {other:?}: {name} is configured from environment \
                 variables (see `{name} --help`)\n"
            )),
        }
    }

    /// Prints what there is to print; `None` means start the binary.
    pub fn finish(self) -> Option<ExitCode> {
        match self {
            Self::Run => None,
            Self::Print(text) => {
                let ok = std::io::stdout().lock().write_all(text.as_bytes()).is_ok();
                Some(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            Self::Usage(text) => {
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
                Some(ExitCode::from(2))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(args: &[&str]) -> Invocation {
        Invocation::from_args("ztunnel", "1.0", "HELP", args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn help_and_version_print_and_anything_else_is_refused() {
        assert_eq!(classify(&[]), Invocation::Run);
        assert_eq!(classify(&["--help"]), Invocation::Print("HELP".into()));
        assert_eq!(classify(&["-h"]), Invocation::Print("HELP".into()));
        assert_eq!(classify(&["--version"]), Invocation::Print("ztunnel 1.0\n".into()));
        let Invocation::Usage(text) = classify(&["--config", "x"]) else {
            panic!("an unknown argument must be refused")
        };
        assert!(text.contains("\"--config\""), "{text}");
    }
}
