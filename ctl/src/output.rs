//! The CLI's own output: what a user asked to see goes to stdout, problems
//! to stderr. Everything else logs into files under the state directory.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI's output is its user interface; this module is the only place that prints"
)]

use std::fmt::Display;

/// One line (or block) on stdout.
pub(crate) fn line(text: impl Display) {
    println!("{text}");
}

/// One line (or block) on stderr.
pub(crate) fn error(text: impl Display) {
    eprintln!("{text}");
}

/// Text on stdout as is (file contents).
pub(crate) fn raw(text: &str) {
    print!("{text}");
}
