//! A minimal OCI Distribution client for load generation, on hyper's
//! pooled client (keep-alive connections, `TCP_NODELAY`), so the client is
//! not what a measurement measures.
//!
//! It owns the wire protocol of the few operations the workloads need:
//! monolithic blob push (`POST ?digest=` with the body where the registry
//! supports it, otherwise `POST` then `PUT ?digest=`, found out once by
//! `probe_monolithic`), chunked push (`POST`, `PATCH`es with
//! `Content-Range`, final `PUT ?digest=`), manifest put and get, and blob
//! get with the digest verified as the body streams in. Every method takes
//! the index of the node to send to, so a workload decides how requests
//! spread over a cluster, and a `Tally` that counts requests and bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sha2::{Digest as _, Sha256};

use crate::data::{Blob, BlobRef, Image, ImageRef, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::error::{Error, Result};
use crate::stats::Tally;

const DIGEST_HEADER: &str = "docker-content-digest";
const OCTET_STREAM: &str = "application/octet-stream";
/// How much of an unexpected answer's body an error quotes.
const ERROR_BODY_QUOTE_BYTES: usize = 300;
/// Idle connections are kept this long for the next request.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// How a registry takes a blob in one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monolithic {
    /// `POST /blobs/uploads/?digest=` with the body: one request.
    SinglePost,
    /// `POST /blobs/uploads/` then `PUT <location>?digest=` with the body:
    /// for registries that ignore a body on the POST (Distribution).
    PostThenPut,
}

impl Monolithic {
    pub fn name(self) -> &'static str {
        match self {
            Monolithic::SinglePost => "single-post",
            Monolithic::PostThenPut => "post-then-put",
        }
    }
}

/// An answer read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One registry: a single node, or the nodes of a cluster, any of which
/// accepts any request. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Registry {
    http: Client<HttpConnector, Full<Bytes>>,
    targets: Vec<String>,
    monolithic: Monolithic,
    login: Option<Login>,
}

/// Credentials for a registry that checks access, used as docker does: a
/// `401` names the token endpoint and scope, the client fetches a token
/// there with Basic credentials and keeps it for that repository.
#[derive(Clone)]
struct Login {
    basic: String,
    tokens: Arc<Mutex<HashMap<String, String>>>,
}

/// The repository a registry URL is about (`""` for `/v2/` and the like):
/// the key tokens are kept under.
fn repo_of(url: &str) -> String {
    let path = url.splitn(4, '/').nth(3).unwrap_or("");
    let Some(rest) = path.strip_prefix("v2/") else {
        return String::new();
    };
    for marker in ["/blobs/", "/manifests/", "/tags/"] {
        if let Some(i) = rest.find(marker) {
            return rest[..i].to_owned();
        }
    }
    String::new()
}

/// `key="value"` pairs of a `WWW-Authenticate` challenge (values may hold
/// commas, as scopes do).
fn challenge_params(value: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = value.split_once(' ').map_or("", |(_, r)| r);
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches([',', ' ']).to_owned();
        let after = &rest[eq + 2..];
        let Some(end) = after.find('"') else { break };
        out.insert(key, after[..end].to_owned());
        rest = &after[end + 1..];
    }
    out
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("targets", &self.targets)
            .field("monolithic", &self.monolithic)
            .finish()
    }
}

impl Registry {
    /// A client for `targets` (`http://host:port`, one per node). Must be
    /// called inside a tokio runtime.
    pub fn new(targets: &[String]) -> Result<Self> {
        if targets.is_empty() {
            return Err(Error::Usage("at least one --target is needed"));
        }
        let targets = targets
            .iter()
            .map(|t| {
                let t = t.trim_end_matches('/');
                if t.starts_with("http://") && t.len() > "http://".len() {
                    Ok(t.to_owned())
                } else {
                    Err(Error::BadTarget(t.to_owned()))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let mut connector = HttpConnector::new();
        // Small requests (manifests) must not wait for Nagle's algorithm.
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Registry {
            http,
            targets,
            monolithic: Monolithic::SinglePost,
            login: None,
        })
    }

    /// Answers `401`s with the token flow, as `user`.
    pub fn with_login(mut self, user: &str, password: &str) -> Self {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.login = Some(Login {
            basic: format!("Basic {basic}"),
            tokens: Arc::default(),
        });
        self
    }

    /// A token for the challenge in `reply`, from its realm.
    async fn fetch_token(&self, login: &Login, reply: &Reply) -> Result<String> {
        let challenge = reply
            .headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let p = challenge_params(challenge);
        let realm = p.get("realm").cloned().unwrap_or_default();
        let mut url = format!(
            "{realm}?service={}",
            p.get("service").map_or("", |s| s.as_str())
        );
        if let Some(scope) = p.get("scope") {
            url.push_str(&format!("&scope={scope}"));
        }
        let basic = login.basic.clone();
        let (answer, _) = Box::pin(self.send(
            Method::GET,
            &url,
            &[(header::AUTHORIZATION, basic.as_str())],
            Bytes::new(),
        ))
        .await?;
        if answer.status != StatusCode::OK {
            return Err(status_error(
                Method::GET,
                &url,
                StatusCode::OK,
                answer.status,
                &answer.body,
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        Ok(v["token"].as_str().unwrap_or("").to_owned())
    }

    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    pub fn nodes(&self) -> usize {
        self.targets.len()
    }

    pub fn monolithic(&self) -> Monolithic {
        self.monolithic
    }

    fn base(&self, node: usize) -> &str {
        &self.targets[node % self.targets.len()]
    }

    /// Sends one request and reads the whole answer. `Ok` only with the
    /// `expected` status; the request counts in `tally` then.
    async fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
        expected: StatusCode,
        tally: &mut Tally,
    ) -> Result<Reply> {
        let (reply, elapsed) = self
            .exchange_any(method.clone(), url, headers, body)
            .await?;
        if reply.status != expected {
            return Err(status_error(
                method,
                url,
                expected,
                reply.status,
                &reply.body,
            ));
        }
        tally.request(elapsed);
        Ok(reply)
    }

    /// `GET /v2/` answers 200: the registry is up and speaks the API.
    pub async fn ping(&self, node: usize, tally: &mut Tally) -> Result<()> {
        let url = format!("{}/v2/", self.base(node));
        self.exchange(Method::GET, &url, &[], Bytes::new(), StatusCode::OK, tally)
            .await?;
        Ok(())
    }

    /// Finds out whether the registry stores a blob sent with
    /// `POST ?digest=` in one request (the spec's optional single-POST
    /// push) or, like Distribution, opens a session and ignores the body;
    /// monolithic pushes then use the registry's one-piece path. The probe
    /// blob ends up pushed either way.
    pub async fn probe_monolithic(&mut self, repo: &str, probe: &Blob) -> Result<Monolithic> {
        let mut tally = Tally::default();
        let url = format!(
            "{}?digest={}",
            uploads_url(self.base(0), repo),
            probe.digest
        );
        let headers = [(header::CONTENT_TYPE, OCTET_STREAM)];
        let (reply, _) = self
            .exchange_any(Method::POST, &url, &headers, probe.data.clone())
            .await?;
        self.monolithic = match reply.status {
            StatusCode::CREATED => Monolithic::SinglePost,
            StatusCode::ACCEPTED => {
                let location = location_of(&reply, Method::POST, &url, self.base(0))?;
                let put = with_query(&location, "digest", &probe.digest);
                self.exchange(
                    Method::PUT,
                    &put,
                    &headers,
                    probe.data.clone(),
                    StatusCode::CREATED,
                    &mut tally,
                )
                .await?;
                Monolithic::PostThenPut
            }
            other => {
                return Err(status_error(
                    Method::POST,
                    &url,
                    StatusCode::CREATED,
                    other,
                    &reply.body,
                ))
            }
        };
        Ok(self.monolithic)
    }

    /// Sends one request and reads the whole answer, whatever its status;
    /// also returns how long that took.
    async fn exchange_any(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
    ) -> Result<(Reply, Duration)> {
        let Some(login) = &self.login else {
            return self.send(method, url, headers, body).await;
        };
        let key = repo_of(url);
        let cached = login
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let with = |token: &str| {
            let mut h: Vec<(header::HeaderName, String)> = headers
                .iter()
                .map(|(n, v)| (n.clone(), (*v).to_owned()))
                .collect();
            h.push((header::AUTHORIZATION, format!("Bearer {token}")));
            h
        };
        if let Some(t) = &cached {
            let h = with(t);
            let refs: Vec<(header::HeaderName, &str)> =
                h.iter().map(|(n, v)| (n.clone(), v.as_str())).collect();
            let (reply, elapsed) = self.send(method.clone(), url, &refs, body.clone()).await?;
            if reply.status != StatusCode::UNAUTHORIZED {
                return Ok((reply, elapsed));
            }
        }
        let (reply, elapsed) = self
            .send(method.clone(), url, headers, body.clone())
            .await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return Ok((reply, elapsed));
        }
        let token = self.fetch_token(login, &reply).await?;
        login
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, token.clone());
        let h = with(&token);
        let refs: Vec<(header::HeaderName, &str)> =
            h.iter().map(|(n, v)| (n.clone(), v.as_str())).collect();
        self.send(method, url, &refs, body).await
    }

    /// One request as given, read whole, timed.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
    ) -> Result<(Reply, Duration)> {
        let mut req = Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        let req = req
            .header(header::CONTENT_LENGTH, body.len())
            .body(Full::new(body))
            .map_err(|source| Error::BadRequest {
                url: url.to_owned(),
                source,
            })?;
        let started = Instant::now();
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|source| Error::Request {
                method: method.clone(),
                url: url.to_owned(),
                source,
            })?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|source| Error::Body {
                method,
                url: url.to_owned(),
                source,
            })?
            .to_bytes();
        let elapsed = started.elapsed();
        let reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        };
        Ok((reply, elapsed))
    }

    /// Pushes `blob` in one piece, the registry's way (`probe_monolithic`).
    pub async fn push_blob(
        &self,
        node: usize,
        repo: &str,
        blob: &Blob,
        tally: &mut Tally,
    ) -> Result<()> {
        let base = self.base(node);
        let headers = [(header::CONTENT_TYPE, OCTET_STREAM)];
        match self.monolithic {
            Monolithic::SinglePost => {
                let url = format!("{}?digest={}", uploads_url(base, repo), blob.digest);
                self.exchange(
                    Method::POST,
                    &url,
                    &headers,
                    blob.data.clone(),
                    StatusCode::CREATED,
                    tally,
                )
                .await?;
            }
            Monolithic::PostThenPut => {
                let location = self.start_upload(base, repo, tally).await?;
                let url = with_query(&location, "digest", &blob.digest);
                self.exchange(
                    Method::PUT,
                    &url,
                    &headers,
                    blob.data.clone(),
                    StatusCode::CREATED,
                    tally,
                )
                .await?;
            }
        }
        tally.bytes += blob.size();
        Ok(())
    }

    /// `POST /blobs/uploads/`: opens a session, returns its absolute URL.
    async fn start_upload(&self, base: &str, repo: &str, tally: &mut Tally) -> Result<String> {
        let url = uploads_url(base, repo);
        let reply = self
            .exchange(
                Method::POST,
                &url,
                &[],
                Bytes::new(),
                StatusCode::ACCEPTED,
                tally,
            )
            .await?;
        location_of(&reply, Method::POST, &url, base)
    }

    /// Pushes `blob` through an upload session in `PATCH`es of at most
    /// `patch_bytes` (each with `Content-Range`), then `PUT ?digest=`.
    pub async fn push_blob_chunked(
        &self,
        node: usize,
        repo: &str,
        blob: &Blob,
        patch_bytes: usize,
        tally: &mut Tally,
    ) -> Result<()> {
        let base = self.base(node);
        let mut location = self.start_upload(base, repo, tally).await?;
        let mut offset = 0usize;
        while offset < blob.data.len() {
            let end = (offset + patch_bytes.max(1)).min(blob.data.len());
            let piece = blob.data.slice(offset..end);
            let range = content_range(offset as u64, piece.len() as u64);
            let headers = [
                (header::CONTENT_TYPE, OCTET_STREAM),
                (header::CONTENT_RANGE, range.as_str()),
            ];
            let reply = self
                .exchange(
                    Method::PATCH,
                    &location,
                    &headers,
                    piece,
                    StatusCode::ACCEPTED,
                    tally,
                )
                .await?;
            // The session URL may change with every answer (Distribution
            // carries its state in a query parameter).
            location = location_of(&reply, Method::PATCH, &location, base)?;
            offset = end;
        }
        let url = with_query(&location, "digest", &blob.digest);
        self.exchange(
            Method::PUT,
            &url,
            &[],
            Bytes::new(),
            StatusCode::CREATED,
            tally,
        )
        .await?;
        tally.bytes += blob.size();
        Ok(())
    }

    /// `PUT /manifests/<reference>` of an OCI image manifest.
    pub async fn put_manifest(
        &self,
        node: usize,
        repo: &str,
        reference: &str,
        manifest: &Blob,
        tally: &mut Tally,
    ) -> Result<()> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base(node));
        let reply = self
            .exchange(
                Method::PUT,
                &url,
                &[(header::CONTENT_TYPE, OCI_MANIFEST)],
                manifest.data.clone(),
                StatusCode::CREATED,
                tally,
            )
            .await?;
        if let Some(got) = header_str(&reply.headers, DIGEST_HEADER) {
            if got != manifest.digest {
                return Err(Error::DigestMismatch {
                    url,
                    expected: manifest.digest.clone(),
                    got: got.to_owned(),
                });
            }
        }
        tally.bytes += manifest.size();
        Ok(())
    }

    /// `GET /manifests/<reference>`, verifying that the body hashes to
    /// `expected`.
    pub async fn get_manifest(
        &self,
        node: usize,
        repo: &str,
        reference: &str,
        expected: &BlobRef,
        tally: &mut Tally,
    ) -> Result<()> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base(node));
        let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST].join(", ");
        let reply = self
            .exchange(
                Method::GET,
                &url,
                &[(header::ACCEPT, accept.as_str())],
                Bytes::new(),
                StatusCode::OK,
                tally,
            )
            .await?;
        let got = crate::data::sha256_digest(&reply.body);
        if got != expected.digest {
            return Err(Error::DigestMismatch {
                url,
                expected: expected.digest.clone(),
                got,
            });
        }
        tally.bytes += reply.body.len() as u64;
        Ok(())
    }

    /// `GET /blobs/<digest>`, hashing the body as it streams in (it is
    /// never held whole) and checking its digest and size.
    pub async fn get_blob(
        &self,
        node: usize,
        repo: &str,
        blob: &BlobRef,
        tally: &mut Tally,
    ) -> Result<()> {
        let url = format!("{}/v2/{repo}/blobs/{}", self.base(node), blob.digest);
        let req = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .body(Full::new(Bytes::new()))
            .map_err(|source| Error::BadRequest {
                url: url.clone(),
                source,
            })?;
        let started = Instant::now();
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|source| Error::Request {
                method: Method::GET,
                url: url.clone(),
                source,
            })?;
        let (parts, mut body) = resp.into_parts();
        let body_error = |source| Error::Body {
            method: Method::GET,
            url: url.clone(),
            source,
        };
        if parts.status != StatusCode::OK {
            let text = body.collect().await.map_err(body_error)?.to_bytes();
            return Err(status_error(
                Method::GET,
                &url,
                StatusCode::OK,
                parts.status,
                &text,
            ));
        }
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(body_error)?;
            if let Ok(data) = frame.into_data() {
                received += data.len() as u64;
                hasher.update(&data);
            }
        }
        let elapsed = started.elapsed();
        if received != blob.size {
            return Err(Error::SizeMismatch {
                url,
                expected: blob.size,
                got: received,
            });
        }
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if got != blob.digest {
            return Err(Error::DigestMismatch {
                url,
                expected: blob.digest.clone(),
                got,
            });
        }
        tally.request(elapsed);
        tally.bytes += received;
        Ok(())
    }

    /// Pushes a small image: its layers and config monolithically, then its
    /// manifest under `tag`, all to `node`.
    pub async fn push_image(
        &self,
        node: usize,
        repo: &str,
        tag: &str,
        image: &Image,
        tally: &mut Tally,
    ) -> Result<()> {
        for layer in &image.layers {
            self.push_blob(node, repo, layer, tally).await?;
        }
        self.push_blob(node, repo, &image.config, tally).await?;
        self.put_manifest(node, repo, tag, &image.manifest, tally)
            .await
    }

    /// Pulls an image the way a client does: the manifest by `tag`, then
    /// every blob it names, each verified.
    pub async fn pull_image(
        &self,
        node: usize,
        repo: &str,
        tag: &str,
        image: &ImageRef,
        tally: &mut Tally,
    ) -> Result<()> {
        self.get_manifest(node, repo, tag, &image.manifest, tally)
            .await?;
        for blob in &image.blobs {
            self.get_blob(node, repo, blob, tally).await?;
        }
        Ok(())
    }
}

fn status_error(
    method: Method,
    url: &str,
    expected: StatusCode,
    status: StatusCode,
    body: &[u8],
) -> Error {
    let quoted = &body[..body.len().min(ERROR_BODY_QUOTE_BYTES)];
    Error::Status {
        method,
        url: url.to_owned(),
        expected,
        status,
        body: String::from_utf8_lossy(quoted).trim().to_owned(),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The absolute URL an answer's `Location` points at.
fn location_of(reply: &Reply, method: Method, url: &str, base: &str) -> Result<String> {
    header_str(&reply.headers, header::LOCATION.as_str())
        .map(|l| resolve(base, l))
        .ok_or_else(|| Error::MissingLocation {
            method,
            url: url.to_owned(),
        })
}

fn uploads_url(base: &str, repo: &str) -> String {
    format!("{base}/v2/{repo}/blobs/uploads/")
}

/// Resolves a `Location` against the node it came from: absolute URLs
/// (Distribution) stay as they are, absolute paths (Stowage) get the
/// node's scheme and authority.
pub fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        format!("{base}/{location}")
    }
}

/// Adds `key=value` to a URL that may already carry a query.
pub fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// The `Content-Range` of a `PATCH` carrying `len` bytes from `start`: the
/// distribution-spec's inclusive `<start>-<end>`, without a unit (which
/// Distribution rejects).
pub fn content_range(start: u64, len: u64) -> String {
    format!("{start}-{}", start + len.max(1) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_inclusive() {
        assert_eq!(content_range(0, 100), "0-99");
        assert_eq!(content_range(100, 100), "100-199");
        assert_eq!(content_range(16 << 20, 1), "16777216-16777216");
    }

    #[test]
    fn locations_resolve_against_the_node() {
        let base = "http://127.0.0.1:5000";
        assert_eq!(
            resolve(base, "/v2/a/blobs/uploads/x"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/x"
        );
        assert_eq!(
            resolve(base, "http://other:1/v2/a/blobs/uploads/x?_state=s"),
            "http://other:1/v2/a/blobs/uploads/x?_state=s"
        );
        assert_eq!(resolve(base, "v2/x"), "http://127.0.0.1:5000/v2/x");
    }

    #[test]
    fn query_parameters_append() {
        assert_eq!(
            with_query("http://h/v2/a/blobs/uploads/x", "digest", "sha256:ab"),
            "http://h/v2/a/blobs/uploads/x?digest=sha256:ab"
        );
        assert_eq!(
            with_query("http://h/u?_state=abc", "digest", "sha256:ab"),
            "http://h/u?_state=abc&digest=sha256:ab"
        );
    }

    #[test]
    fn targets_must_be_http_urls() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _g = rt.enter();
        assert_eq!(repo_of("http://h:1/v2/a/b/manifests/t"), "a/b");
        assert_eq!(repo_of("http://h:1/v2/"), "");
        let p = challenge_params(
            "Bearer realm=\"http://h/token\",service=\"s\",scope=\"repository:a:pull,push\"",
        );
        assert_eq!(p["scope"], "repository:a:pull,push");
        assert_eq!(p["realm"], "http://h/token");
        assert!(Registry::new(&[]).is_err());
        assert!(Registry::new(&["127.0.0.1:5000".into()]).is_err());
        let r = Registry::new(&["http://127.0.0.1:5000/".into()]).unwrap();
        assert_eq!(r.targets(), ["http://127.0.0.1:5000"]);
        assert_eq!(r.base(3), "http://127.0.0.1:5000");
    }
}
