//! HTTP reverse proxying to a worker, over its Unix socket: header hygiene and streaming
//! forwarding.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::auth::identity;
use crate::workers::{socket_path, Target};

/// The pooled HTTP/1 client used to reach workers.
pub type UpstreamClient = Client<WorkerConnector, Body>;

/// A client for the workers whose sockets are in `dir`.
pub fn client(dir: PathBuf) -> UpstreamClient {
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(WorkerConnector { dir: Arc::new(dir) })
}

/// Connects the client to the socket of the worker process its URI names
/// (`http://worker-SLOT-GENERATION/`).
#[derive(Clone)]
pub struct WorkerConnector {
    /// The gateway's private directory of worker sockets.
    dir: Arc<PathBuf>,
}

impl tower::Service<Uri> for WorkerConnector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let target = uri.host().and_then(Target::from_authority);
        let dir = self.dir.clone();
        Box::pin(async move {
            let target =
                target.ok_or_else(|| std::io::Error::other("no worker process in the URI"))?;
            Ok(TokioIo::new(
                UnixStream::connect(socket_path(&dir, target)).await?,
            ))
        })
    }
}

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// True when the browser reached us over TLS, directly or through a proxy that says so.
pub fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').next().map(str::trim) == Some("https"))
}

/// Prepares a browser request's headers for a worker.
///
/// Strips hop-by-hop headers, the identity cookie and any client-chosen Bokeh session id, and
/// appends the `X-Forwarded-*` set.
pub fn upstream_headers(headers: &mut HeaderMap, peer: SocketAddr) {
    strip_hop_by_hop(headers);
    identity::strip_from(headers);
    headers.remove("bokeh-session-id");
    let proto = if is_https(headers) { "https" } else { "http" };
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", v);
    }
    if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.insert("x-real-ip", v);
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.entry("x-forwarded-host").or_insert(host);
    }
}

/// A query string without the parameters a client must not choose.
pub fn clean_query(query: Option<&str>) -> String {
    let parts: Vec<String> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            // Tornado percent-decodes names, so `bokeh%2Dtoken` must go too.
            let name = percent_decode(p.split('=').next().unwrap_or(""));
            !name.eq_ignore_ascii_case("bokeh-session-id")
                && !name.eq_ignore_ascii_case("bokeh-token")
        })
        .map(str::to_owned)
        .collect();
    parts.join("&")
}

/// Decodes `%XX` escapes and `+` (as query strings do); invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends a request to a worker and streams its response back; `session` is the Bokeh session
/// id the gateway chose, sent in the `Bokeh-Session-Id` header.
///
/// Never in the query: whatever the gateway adds to the URI can come back to the browser, in
/// Panel's login redirect (`./login?next=<URI>`) and its `next_url` cookie.
pub async fn forward(
    client: &UpstreamClient,
    mut req: Request<Body>,
    worker: Target,
    path_and_query: &str,
    peer: SocketAddr,
    session: Option<&str>,
) -> Response<Body> {
    let uri: Uri = match format!("http://{}{path_and_query}", worker.authority()).parse() {
        Ok(u) => u,
        Err(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "The request path is not valid; check the address.",
            )
        }
    };
    *req.uri_mut() = uri;
    upstream_headers(req.headers_mut(), peer);
    if let Some(id) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        req.headers_mut().insert("bokeh-session-id", id);
    }
    match client.request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            tracing::warn!(error = %e, worker = worker.slot, "worker request failed");
            plain(
                StatusCode::BAD_GATEWAY,
                "The app's worker is not answering; reload the page in a few seconds.",
            )
        }
    }
}

/// A short plain-text response: one sentence that says what to do.
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .expect("static response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_loses_client_session_ids() {
        assert_eq!(
            clean_query(Some("a=1&bokeh-session-id=evil&Bokeh-Token=x&b=2")),
            "a=1&b=2"
        );
        assert_eq!(clean_query(None), "");
        assert_eq!(
            clean_query(Some("bokeh%2Dsession%2did=x&bokeh%2dtoken=y&ok=%41&bad=%")),
            "ok=%41&bad=%"
        );
    }

    #[test]
    fn upstream_headers_are_clean() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("bokeh-session-id", HeaderValue::from_static("evil"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("tether_id=abc; other=1"),
        );
        h.insert(header::HOST, HeaderValue::from_static("example.org"));
        upstream_headers(&mut h, "10.1.2.3:4000".parse().unwrap());
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("bokeh-session-id").is_none());
        assert_eq!(h.get(header::COOKIE).unwrap(), "other=1");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "example.org");
    }
}
