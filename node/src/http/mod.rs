//! The OCI Distribution HTTP API on hyper 1: accepts connections, parses
//! each request into an `Endpoint`, runs its handler, and maps any error to
//! OCI error JSON in one place. Speaks HTTPS when given a `Tls` (HTTP/2 or
//! HTTP/1.1 by ALPN). Shuts down gracefully: stop accepting, finish
//! requests in flight, then return.
//!
//! Layout: `router.rs` (path → `Endpoint`), `access.rs` (what each
//! endpoint needs of the caller, the token endpoint, the accounts and rules
//! API), `handlers.rs` (one function per endpoint), `error.rs` (error →
//! status, code, JSON), `body.rs`.

mod access;
pub mod body;
pub mod error;
mod handlers;
pub mod proxy;
pub mod router;

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use self::body::Body;
use self::router::{Admin, Endpoint, Oci, Query};
use crate::auth::Auth;
use crate::error::{Error, Result};
use crate::receipt;
use crate::registry::Registry;
use crate::tls::Tls;
use stowage_storage::types::NodeId;

/// What the edge serves with: the registry, who may use it, and how many
/// connections it holds at once.
pub struct Api {
    pub reg: Arc<Registry>,
    pub auth: Arc<Auth>,
    pub max_connections: usize,
    /// Time to send a request's headers, the first byte of a connection
    /// included (`header_read_timeout_secs`).
    pub header_read_timeout: Duration,
    /// How upload requests reach the node owning their session.
    pub forwarder: proxy::Forwarder,
    /// One info line per request (`access_log`).
    pub access_log: bool,
}

/// What a connection beyond `max_connections` gets before it is closed:
/// a clear answer instead of a node that stops accepting.
fn busy_response() -> Vec<u8> {
    let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"too many open connections; retry","detail":null}]}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Retry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers and closes a connection the node has no room for.
async fn refuse_busy(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&busy_response()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

pub async fn handle(api: Arc<Api>, req: Request<Incoming>, peer: Option<IpAddr>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let head = method == Method::HEAD;
    let bytes_in = declared_length(req.headers());
    let ((label, result), receipt) = receipt::scope(async {
        let routed =
            check_host(req.version(), req.headers()).and_then(|()| router::route(&method, &path));
        match routed {
            Ok(endpoint) => (endpoint.label(), checked(&api, endpoint, req, peer).await),
            Err(e) => ("unrouted", Err(e)),
        }
    })
    .await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => error::response(&e, head),
    };
    stamp(resp.headers_mut(), api.reg.settings.node_id, &receipt);
    let bytes_out = if head {
        0
    } else {
        declared_length(resp.headers())
    };
    api.reg.metrics().request(
        label,
        &method,
        resp.status().as_u16(),
        bytes_out,
        started.elapsed(),
    );
    if api.access_log {
        // When the answer's head is ready: a streamed body may still be
        // going out, so `bytes_out` is what the answer declares.
        tracing::info!(
            target: "stowage::access",
            %method,
            %path,
            status = resp.status().as_u16(),
            bytes_in,
            bytes_out,
            ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            caller = %receipt.caller.as_deref().unwrap_or("-"),
            peer = %peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        );
    }
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// A message's declared body length, 0 if it declares none.
fn declared_length(headers: &HeaderMap) -> u64 {
    handlers::content_length(headers)
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// Which node answered, and for a write the entry that made it durable: a
/// client (or a chaos checker) can then ask any node for a read at least
/// that fresh with `Stowage-Min-Log-Index`. A forwarded upload request
/// keeps the headers of the node that served it.
fn stamp(headers: &mut HeaderMap, node: NodeId, receipt: &receipt::Receipt) {
    if !headers.contains_key(NODE_HEADER) {
        headers.insert(NODE_HEADER, HeaderValue::from(node.0));
    }
    if let Some(w) = receipt.write {
        headers.insert(LOG_INDEX_HEADER, HeaderValue::from(w.index));
        headers.insert(TERM_HEADER, HeaderValue::from(w.term));
    }
}

pub const NODE_HEADER: &str = "stowage-node";
pub const LOG_INDEX_HEADER: &str = "stowage-log-index";
pub const TERM_HEADER: &str = "stowage-term";
pub const MIN_LOG_INDEX_HEADER: &str = "stowage-min-log-index";

/// A read may demand a node that has applied at least a given entry (one a
/// write it saw acknowledged elsewhere named); the node waits for it within
/// the request deadline, else answers 503.
async fn wait_fresh_enough(reg: &Registry, headers: &HeaderMap) -> Result<()> {
    let Some(v) = headers.get(MIN_LOG_INDEX_HEADER) else {
        return Ok(());
    };
    let index = v
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| Error::BadHeader {
            name: "Stowage-Min-Log-Index",
            reason: "expected a log index (a non-negative integer)".into(),
        })?;
    reg.consensus().wait_applied_for_client(index).await
}

/// Authenticates and authorizes once, then runs the endpoint.
async fn checked(
    api: &Api,
    endpoint: Endpoint,
    req: Request<Incoming>,
    peer: Option<IpAddr>,
) -> Result<Response<Body>> {
    let reg = &api.reg;
    let auth = &api.auth;
    let challenge = auth.challenge(req.headers(), req.uri().authority().map(|a| a.as_str()));
    if endpoint == Endpoint::Admin(Admin::Token) {
        let (parts, body) = req.into_parts();
        let query = Query::parse(parts.uri.query());
        return access::token(
            auth,
            &parts.method,
            &query,
            &parts.headers,
            body,
            peer,
            &challenge,
        )
        .await;
    }
    let query = Query::parse(req.uri().query());
    let caller = auth.authenticate(req.headers(), peer, &challenge).await?;
    if let Some(name) = caller.name() {
        receipt::caller(name.as_str());
    }
    for need in access::needs(&endpoint, req.method(), &query) {
        auth.authorize(&caller, &need, &challenge)?;
    }
    // Registry reads and the status report; probes and metrics answer at
    // once whatever a client sends.
    let freshness_applies = matches!(endpoint, Endpoint::Oci(_) | Endpoint::Admin(Admin::Status));
    if freshness_applies && matches!(*req.method(), Method::GET | Method::HEAD) {
        wait_fresh_enough(reg, req.headers()).await?;
    }
    let (parts, body) = req.into_parts();
    match endpoint {
        // An upload session lives on the node that opened it (which checks
        // the same credentials again).
        Endpoint::Oci(Oci::Upload { ref id, .. }) if id.owner() != reg.settings.node_id => {
            let req = Request::from_parts(parts, body);
            proxy::forward(reg, &api.forwarder, id.owner(), req).await
        }
        Endpoint::Oci(route) => {
            let visible = |repo: &str| auth.may_pull(&caller, repo).unwrap_or(false);
            handlers::oci(
                reg,
                &visible,
                &parts.method,
                route,
                &query,
                &parts.headers,
                body,
            )
            .await
        }
        Endpoint::Admin(ref route @ Admin::Accounts { kind, ref name }) => {
            access::accounts(auth, route, kind, name.as_ref(), &parts.method, body).await
        }
        Endpoint::Admin(Admin::Access) => access::rules(auth, &parts.method, body).await,
        Endpoint::Admin(Admin::Keys) => access::keys(auth, &parts.method).await,
        Endpoint::Admin(route) => handlers::admin(reg, &parts.method, route, &query, body).await,
    }
}

/// RFC 9112 §3.2: a server must answer 400 to an HTTP/1.1 request without
/// a `Host` header and to any HTTP/1 request with more than one, since
/// such a request is ambiguous about its target. HTTP/2 names its target
/// in `:authority` (hyper puts it in the URI), so it is not checked here.
fn check_host(version: Version, headers: &HeaderMap) -> Result<()> {
    let count = headers.get_all(header::HOST).iter().count();
    let ok = match version {
        Version::HTTP_11 => count == 1,
        // HTTP/1.0 did not require Host, but two are ambiguous there too.
        Version::HTTP_09 | Version::HTTP_10 => count <= 1,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::HostHeader { count })
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then waits up to
/// `drain` for requests in flight. With `tls`, every connection is TLS,
/// accepted with the configuration current when it arrived.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(api.header_read_timeout);
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(api.max_connections.max(1)));
    let mut warned_busy: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    if warned_busy.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(max_connections = api.max_connections, "at the connection limit: answering 503 to new connections");
                        warned_busy = Some(std::time::Instant::now());
                    }
                    // A TLS client could not read a plain answer: it is
                    // just closed.
                    if tls.is_none() {
                        tokio::spawn(refuse_busy(stream));
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let first_byte = api.header_read_timeout;
                let api = api.clone();
                let peer = Some(peer.ip());
                // Taken now, so shutdown also waits for (and then closes)
                // a connection still in its TLS handshake.
                let watcher = graceful.watcher();
                let builder = builder.clone();
                let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.current()));
                tokio::spawn(async move {
                    // The HTTP version detection (and a TLS handshake)
                    // would wait for a first byte forever: a connection
                    // that never sends one would hold its slot for good.
                    let mut probe = [0u8; 1];
                    match tokio::time::timeout(first_byte, stream.peek(&mut probe)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    match acceptor {
                        None => serve_connection(builder, stream, api, peer, watcher).await,
                        Some(acceptor) => {
                            // One client's failed or stalled handshake is its
                            // own problem: log it quietly, never stop accepting.
                            match tokio::time::timeout(first_byte, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => serve_connection(builder, s, api, peer, watcher).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(?peer, error = %e, "TLS handshake failed");
                                }
                                Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
                            }
                        }
                    }
                    drop(slot);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("stopped accepting; finishing requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(drain) => tracing::warn!("gave up waiting for open connections"),
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one connection, plain or TLS, until it
/// closes or shutdown ends it.
async fn serve_connection<S>(
    builder: auto::Builder<TokioExecutor>,
    stream: S,
    api: Arc<Api>,
    peer: Option<IpAddr>,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let api = api.clone();
        async move { Ok::<_, Infallible>(handle(api, req, peer).await) }
    });
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        for i in 0..n {
            h.append(
                header::HOST,
                HeaderValue::from_str(&format!("h{i}:5000")).unwrap(),
            );
        }
        h
    }

    #[test]
    fn http1_needs_exactly_one_host_and_http2_none() {
        let cases = [
            (Version::HTTP_11, 0, false),
            (Version::HTTP_11, 1, true),
            (Version::HTTP_11, 2, false),
            (Version::HTTP_10, 0, true),
            (Version::HTTP_10, 2, false),
            (Version::HTTP_2, 0, true),
            (Version::HTTP_2, 1, true),
        ];
        for (version, n, ok) in cases {
            let r = check_host(version, &hosts(n));
            assert_eq!(r.is_ok(), ok, "{version:?} with {n} Host headers");
            if let Err(e) = r {
                let (status, code) = error::classify(&e);
                assert_eq!((status.as_u16(), code), (400, "UNSUPPORTED"));
            }
        }
    }
}
