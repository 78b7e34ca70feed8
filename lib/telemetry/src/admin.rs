//! The admin and observability HTTP server.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http_server::{Activity, ServeLimits, Tracked, accept_loop, with_idle_timeout};
use crate::logging::LogControl;

/// Produces the JSON of `/config_dump`.
pub type ConfigDump = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Answers `GET /debug/<name>?<query>` with JSON, or `None` for an unknown
/// name (404). Called with `name` (no leading `/debug/`) and the raw query.
pub type DebugHandler = Arc<dyn Fn(&str, &str) -> Option<serde_json::Value> + Send + Sync>;

/// What the endpoints serve. Absent parts answer 404.
#[derive(Clone, Default)]
pub struct AdminState {
    pub registry: Option<Arc<Registry>>,
    pub ready: Option<watch::Receiver<bool>>,
    pub config_dump: Option<ConfigDump>,
    pub logging: Option<LogControl>,
    pub debug: Option<DebugHandler>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("metrics", &self.registry.is_some())
            .field("ready", &self.ready.as_ref().map(|r| *r.borrow()))
            .field("config_dump", &self.config_dump.is_some())
            .field("logging", &self.logging)
            .field("debug", &self.debug.is_some())
            .finish()
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.into())
}

/// `%XX` (and `+`) decoding of a query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `name` in a URL query (`a=1&b=2`), percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

/// Answers one request; never fails (errors are responses).
pub fn route<B>(state: &AdminState, request: &Request<B>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let method = request.method();
    match (path, method) {
        ("/metrics" | "/stats/prometheus", &Method::GET) => match &state.registry {
            Some(registry) => {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, registry) {
                    Ok(()) => respond(StatusCode::OK, OPENMETRICS, out),
                    Err(e) => {
                        text(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}"))
                    }
                }
            }
            None => text(StatusCode::NOT_FOUND, "no metrics here"),
        },
        ("/healthz/ready" | "/ready", &Method::GET) => match &state.ready {
            Some(ready) if *ready.borrow() => text(StatusCode::OK, "ready\n"),
            Some(_) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            None => text(StatusCode::OK, "ready\n"),
        },
        ("/config_dump", &Method::GET) => match &state.config_dump {
            Some(dump) => match serde_json::to_string_pretty(&dump()) {
                Ok(json) => respond(StatusCode::OK, "application/json", json),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding config: {e}")),
            },
            None => text(StatusCode::NOT_FOUND, "no config dump here"),
        },
        ("/logging", &Method::GET) => match &state.logging {
            Some(control) => text(StatusCode::OK, format!("{}\n", control.current())),
            None => text(StatusCode::NOT_FOUND, "no log control here"),
        },
        ("/logging", &Method::POST) => match &state.logging {
            Some(control) => {
                let level = query_param(request.uri().query().unwrap_or_default(), "level");
                match level {
                    Some(level) => match control.set(&level) {
                        Ok(()) => text(StatusCode::OK, format!("{}\n", control.current())),
                        Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
                    },
                    None => text(StatusCode::BAD_REQUEST, "use /logging?level=<filter>"),
                }
            }
            None => text(StatusCode::NOT_FOUND, "no log control here"),
        },
        (
            "/metrics" | "/stats/prometheus" | "/healthz/ready" | "/ready" | "/config_dump"
            | "/logging",
            _,
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        (_, &Method::GET) if path.starts_with("/debug/") => {
            let name = path.trim_start_matches("/debug/");
            let query = request.uri().query().unwrap_or_default();
            match state.debug.as_ref().and_then(|debug| debug(name, query)) {
                Some(value) => match serde_json::to_string_pretty(&value) {
                    Ok(json) => respond(StatusCode::OK, "application/json", json),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding: {e}")),
                },
                None => text(StatusCode::NOT_FOUND, "no such debug endpoint"),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Serves `state` on `listener` (HTTP/1.1) until the task is dropped, with
/// the default [`ServeLimits`].
pub async fn serve(listener: TcpListener, state: AdminState) {
    serve_with(listener, state, ServeLimits::default()).await;
}

/// Serves `state` on `listener` under `limits` until the task is dropped.
pub async fn serve_with(listener: TcpListener, state: AdminState, limits: ServeLimits) {
    let state = Arc::new(state);
    let name = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let accept = || listener.accept();
    accept_loop(&name, accept, |(tcp, peer)| {
        let state = Arc::clone(&state);
        tokio::spawn(serve_connection(tcp, peer, state, limits));
    })
    .await;
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    state: Arc<AdminState>,
    limits: ServeLimits,
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = route(&state, &request);
        async move { Ok::<_, Infallible>(response) }
    });
    let activity = Activity::new();
    let io = TokioIo::new(Tracked::new(tcp, Arc::clone(&activity)));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .serve_connection(io, service);
    match with_idle_timeout(activity, limits.idle_timeout, conn).await {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::debug!(%peer, error = %e, "admin connection ended"),
        None => tracing::debug!(%peer, "admin connection idle; closed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_param("a=1&proxyID=ztunnel%7Enode-a.istio-system", "proxyID").as_deref(),
            Some("ztunnel~node-a.istio-system")
        );
        assert_eq!(
            query_param("level=info%2Caccess%3Ddebug", "level").as_deref(),
            Some("info,access=debug")
        );
        assert_eq!(query_param("proxyID=a%zz", "proxyID").as_deref(), Some("a%zz"));
        assert_eq!(query_param("x=1", "proxyID"), None);
    }
}
