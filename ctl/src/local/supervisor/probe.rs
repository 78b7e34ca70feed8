//! Talking to the processes the supervisor runs: readiness, istiod's view
//! of the config, the supervisor's own log, `ip`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::local::error::Error;
use crate::local::http;
use crate::local::layout::{ISTIOD_IP, Layout};
use crate::local::process::Supervised;
use crate::output;

pub(super) const ISTIOD_MONITORING_PORT: u16 = 15014;
pub(super) const ISTIOD_GRPC_PORT: u16 = 15012;
pub(super) const ZTUNNEL_READY_PORT: u16 = 15021;
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One line of the supervisor's log (its stderr is `STATE/logs/supervisor.log`).
pub(super) fn log(line: impl std::fmt::Display) {
    output::error(format_args!("{} {line}", utc_now()));
}

fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    utc(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

pub(super) fn istiod_addr(port: u16) -> SocketAddr {
    SocketAddr::from((ISTIOD_IP.parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::LOCALHOST), port))
}

/// Waits until `GET path` answers 200 in `netns`, failing early if the
/// process exits.
pub(super) async fn wait_ready(
    process: &mut Supervised,
    netns: &str,
    addr: SocketAddr,
    path: &str,
) -> Result<(), Error> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = process.exited() {
            return Err(Error::Exited {
                what: process.launch.what.clone(),
                status,
                detail: log_tail(&process.launch.log),
            });
        }
        let last = match http::get(netns, addr, path) {
            Ok((200, _)) => return Ok(()),
            Ok((code, body)) => format!("{code} {}", body.trim()),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(Error::NotReady {
                what: process.launch.what.clone(),
                seconds: START_TIMEOUT.as_secs(),
                detail: format!(" (last answer: {last}){}", log_tail(&process.launch.log)),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last lines of a log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines.get(lines.len().saturating_sub(8)..).unwrap_or_default();
    format!("; log {}:\n{}", path.display(), tail.join("\n"))
}

/// The problems istiod reports about the files it read, with paths of
/// the generated copy turned back into the user's.
pub(super) fn istiod_file_errors(
    layout: &Layout,
    fabric: &str,
    config_dir: &Path,
) -> Result<Vec<String>, String> {
    let (code, body) =
        http::get(fabric, istiod_addr(ISTIOD_MONITORING_PORT), "/debug/config_errors")?;
    if code != 200 {
        return Err(format!("/debug/config_errors answered {code}"));
    }
    let value: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let generated = layout.config().display().to_string();
    let user = config_dir.display().to_string();
    Ok(value
        .get("files")
        .and_then(serde_json::Value::as_array)
        .map(|files| {
            files
                .iter()
                .filter_map(serde_json::Value::as_str)
                .map(|e| e.replace(&generated, &user))
                .collect()
        })
        .unwrap_or_default())
}

pub(super) fn ip(args: &[&str]) -> Result<(), Error> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| Error::Spawn { what: "ip".into(), source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("ip {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_795_796_431), "2026-11-27T16:20:31Z");
    }
}
