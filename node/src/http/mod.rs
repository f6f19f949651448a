//! The OCI Distribution HTTP API on hyper 1: accepts connections, parses
//! each request into an `Endpoint`, runs its handler, and maps any error to
//! OCI error JSON in one place. Shuts down gracefully: stop accepting,
//! finish requests in flight, then return.
//!
//! Layout: `router.rs` (path → `Endpoint`), `handlers.rs` (one function per
//! endpoint), `error.rs` (error → status, code, JSON), `body.rs`.

pub mod body;
pub mod error;
mod handlers;
mod proxy;
pub mod router;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use self::body::Body;
use self::router::{Endpoint, Query};
use crate::registry::Registry;

/// A client gets this long to send its request headers, so idle or
/// malicious connections cannot pin resources.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn handle(reg: Arc<Registry>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let head = method == Method::HEAD;
    let result = match router::route(&method, &path) {
        // An upload session lives on the node that opened it.
        Ok(Endpoint::Upload { id, .. }) if id.owner() != reg.settings.node_id => {
            proxy::forward(&reg, id.owner(), req).await
        }
        Ok(endpoint) => {
            let (parts, body) = req.into_parts();
            let query = Query::parse(parts.uri.query());
            handlers::dispatch(&reg, &parts.method, endpoint, &query, &parts.headers, body).await
        }
        Err(e) => Err(e),
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => error::response(&e, head),
    };
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// Serves the API on `listener` until `shutdown` resolves, then waits up to
/// `drain` for requests in flight.
pub async fn serve(
    listener: TcpListener,
    reg: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let reg = reg.clone();
                let svc = service_fn(move |req| {
                    let reg = reg.clone();
                    async move { Ok::<_, Infallible>(handle(reg, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
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
