//! Forwarding an upload-session request to the node that owns the session:
//! sessions live where they were opened, so a load balancer may spread one
//! upload over nodes and every request still lands on the owner's state.

use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stowage_storage::types::NodeId;

use super::body::Body;
use crate::error::{Error, Result};
use crate::registry::Registry;

/// Marks a request already forwarded once, so a confused membership can
/// never bounce a request between nodes.
const FORWARDED: HeaderName = HeaderName::from_static("x-stowage-forwarded");

/// How this node reaches its peers' registry ports: plain HTTP, or HTTPS
/// trusting the cluster CA when the registry port speaks TLS (peers then
/// speak it too).
pub enum Forwarder {
    Plain(Client<HttpConnector, Incoming>),
    Tls(Client<HttpsConnector<HttpConnector>, Incoming>),
}

impl Forwarder {
    pub fn new(tls: Option<rustls::ClientConfig>) -> Forwarder {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        match tls {
            None => Forwarder::Plain(Client::builder(TokioExecutor::new()).build(http)),
            Some(cfg) => {
                http.enforce_http(false);
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(cfg)
                    .https_only()
                    .enable_http1()
                    .wrap_connector(http);
                Forwarder::Tls(Client::builder(TokioExecutor::new()).build(connector))
            }
        }
    }

    fn scheme(&self) -> &'static str {
        match self {
            Forwarder::Plain(_) => "http",
            Forwarder::Tls(_) => "https",
        }
    }

    async fn send(
        &self,
        req: Request<Incoming>,
    ) -> std::result::Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        match self {
            Forwarder::Plain(c) => c.request(req).await,
            Forwarder::Tls(c) => c.request(req).await,
        }
    }
}

pub async fn forward(
    reg: &Registry,
    forwarder: &Forwarder,
    owner: NodeId,
    mut req: Request<Incoming>,
) -> Result<Response<Body>> {
    if req.headers().contains_key(&FORWARDED) {
        return Err(Error::BlobUploadUnknown);
    }
    // An id naming no member (a guess, or a session of a node since
    // removed) is a session nobody holds: the client's mistake, not the
    // cluster's condition, so 404 rather than a 503 to retry.
    if !reg.consensus().members().contains_key(&owner) {
        tracing::debug!(%owner, "upload id names a node that is not a member");
        return Err(Error::BlobUploadUnknown);
    }
    let addr = reg.http_addr_of(owner).await.ok_or_else(|| {
        Error::Unavailable(format!(
            "node {owner}, which owns this upload, is not reachable"
        ))
    })?;
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    *req.uri_mut() = format!("{}://{addr}{path}", forwarder.scheme())
        .parse()
        .map_err(|_| Error::Unavailable(format!("node {owner} has an unusable address {addr}")))?;
    req.headers_mut().remove(http::header::HOST);
    req.headers_mut()
        .insert(FORWARDED, HeaderValue::from_static("1"));
    let resp = forwarder
        .send(req)
        .await
        .map_err(|e| Error::Unavailable(format!("forwarding to node {owner}: {e}")))?;
    Ok(resp.map(|b| b.map_err(std::io::Error::other).boxed()))
}
