//! A client of any OCI registry (another Stowage, Distribution, Zot,
//! Harbor): Basic credentials or the bearer-token challenge, manifests,
//! blobs HEAD-first, and blob uploads in pieces that resume from the
//! offset the target reports after a failure of either side, so a big
//! layer never starts again from zero.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::cli::HttpClient;
use crate::error::{Error, Result};

/// Bytes per PATCH of an upload: what a failure can cost at most.
pub const PIECE_BYTES: u64 = 8 << 20;
/// Attempts at one piece before the upload gives up (each resumes).
const PIECE_ATTEMPTS: u32 = 8;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest answer read: a piece, with room (manifests are 4 MiB at most).
const MAX_BODY_BYTES: usize = 2 * PIECE_BYTES as usize;

/// Where a blob's bytes come from, by range.
pub trait BlobSource: Sync {
    fn read(&self, offset: u64, len: u64) -> impl Future<Output = Result<Bytes>> + Send;
}

/// Bytes `offset..offset + len` of a blob made of `chunks`, each chunk
/// got by `get`: a slice of it when one chunk holds the range (no copy),
/// else the pieces joined. A chunk shorter than its record is an error,
/// never a short piece.
pub async fn read_chunks<F, Fut>(
    chunks: &[stowage_storage::meta::ChunkRef],
    offset: u64,
    len: u64,
    get: F,
) -> Result<Bytes>
where
    F: Fn(stowage_storage::types::ChunkId) -> Fut,
    Fut: Future<Output = Result<Bytes>>,
{
    let pieces = crate::chunks::pieces_in_range(chunks, offset, offset + len);
    let mut parts = Vec::with_capacity(pieces.len());
    for (id, a, b) in pieces {
        let data = get(id).await?;
        let (a, b) = (
            usize::try_from(a).unwrap_or(usize::MAX),
            usize::try_from(b).unwrap_or(usize::MAX),
        );
        if b > data.len() || a > b {
            return Err(Error::Remote(format!(
                "chunk {id} is shorter than its record"
            )));
        }
        parts.push(data.slice(a..b));
    }
    if parts.len() == 1 {
        return Ok(parts.swap_remove(0));
    }
    Ok(Bytes::from(parts.concat()))
}

/// One registry, by base URL (`http://host:port` or `https://...`).
pub struct Remote {
    pub base: String,
    basic: Option<String>,
    bearer: Mutex<Option<String>>,
    client: HttpClient,
    /// Blob bytes this client sent (counting resent bytes).
    pub sent: AtomicU64,
}

/// What pushing one blob did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The target had it.
    Present,
    /// The target linked it from another of its repositories.
    Mounted,
    /// Uploaded; `resumed` pieces were continued after a failure.
    Uploaded { bytes: u64, resumed: u32 },
}

fn fail(what: &str, status: StatusCode, body: &[u8]) -> Error {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let msg = v["errors"][0]["message"].as_str().unwrap_or("").to_owned();
    let text = format!("{what}: {status} {msg}");
    // Credentials, a missing repository, a timeout or a rate limit may
    // change on their own; other client errors will not.
    let transient = matches!(status.as_u16(), 401 | 403 | 404 | 408 | 429);
    if status.is_client_error() && !transient {
        Error::RemoteRefused(text)
    } else {
        Error::Remote(text)
    }
}

/// Whether `url` is on the same scheme, host and port as `base`.
fn same_origin(url: &str, base: &str) -> bool {
    let origin = |u: &str| -> Option<String> {
        let (scheme, rest) = u.split_once("://")?;
        let host = rest.split('/').next()?;
        Some(format!("{scheme}://{host}"))
    };
    origin(url).is_some() && origin(url) == origin(base)
}

/// `key="value"` pairs of a `WWW-Authenticate: Bearer ...` challenge.
fn challenge(headers: &HeaderMap) -> Option<Vec<(String, String)>> {
    let v = headers.get(header::WWW_AUTHENTICATE)?.to_str().ok()?;
    let rest = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    let mut out = Vec::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        out.push((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
    }
    Some(out)
}

impl Remote {
    pub fn new(base: &str, user: Option<(&str, &str)>, client: HttpClient) -> Remote {
        let basic = user.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        Remote {
            base: base.trim_end_matches('/').to_owned(),
            basic,
            bearer: Mutex::new(None),
            client,
            sent: AtomicU64::new(0),
        }
    }

    /// For a rule's account (a user and password kept together, or none).
    pub fn for_account(
        base: &str,
        user: &Option<String>,
        password: &Option<String>,
        client: HttpClient,
    ) -> Remote {
        let creds = match (user, password) {
            (Some(u), Some(p)) => Some((u.as_str(), p.as_str())),
            _ => None,
        };
        Remote::new(base, creds, client)
    }

    /// With an `Authorization` value already made (the CLI's).
    pub fn with_authorization(
        base: &str,
        authorization: Option<String>,
        client: HttpClient,
    ) -> Remote {
        let mut r = Remote::new(base, None, client);
        r.basic = authorization;
        r
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    async fn once(
        &self,
        method: &Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: &Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let mut req = http::Request::builder().method(method.clone()).uri(url);
        // Credentials go to the registry's own origin only: never to an
        // upload location or a redirect elsewhere.
        if same_origin(url, &self.base) {
            let bearer = self
                .bearer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(a) = bearer.or_else(|| self.basic.clone()) {
                req = req.header(header::AUTHORIZATION, a);
            }
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body.clone()))
            .map_err(|e| Error::Remote(format!("bad URL {url}: {e}")))?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| Error::Remote(format!("{url}: no answer in {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| Error::Remote(format!("cannot reach {url}: {e}")))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY_BYTES);
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, limited.collect())
            .await
            .map_err(|_| Error::Remote(format!("{url}: body stalled")))?
            .map_err(|e| Error::Remote(format!("{url}: {e}")))?
            .to_bytes();
        Ok((status, headers, bytes))
    }

    /// One request; a bearer challenge is answered once with a token from
    /// the registry's realm (with the Basic credentials, if any).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let url = self.url(path);
        let first = self.once(&method, &url, headers, &body).await?;
        if first.0 != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let Some(params) = challenge(&first.1) else {
            return Ok(first);
        };
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let Some(realm) = get("realm") else {
            return Ok(first);
        };
        let mut token_url = realm.clone();
        let mut sep = if realm.contains('?') { '&' } else { '?' };
        for k in ["service", "scope"] {
            if let Some(v) = get(k) {
                token_url.push_str(&format!(
                    "{sep}{k}={}",
                    percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC)
                ));
                sep = '&';
            }
        }
        *self.bearer.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // The realm gets the password only on this registry's own origin
        // or over HTTPS (it is often a separate auth host).
        let mut auth: Vec<(header::HeaderName, String)> = Vec::new();
        if !same_origin(&token_url, &self.base) {
            if !token_url.starts_with("https://") {
                return Err(Error::RemoteRefused(format!(
                    "{}: its token realm {realm} is another host over plain HTTP; \
                     no credentials are sent there",
                    self.base
                )));
            }
            if let Some(b) = &self.basic {
                auth.push((header::AUTHORIZATION, b.clone()));
            }
        }
        let (status, _, body_bytes) = self
            .once(&Method::GET, &token_url, &auth, &Bytes::new())
            .await?;
        if !status.is_success() {
            return Err(fail(&format!("token from {realm}"), status, &body_bytes));
        }
        let v: serde_json::Value = serde_json::from_slice(&body_bytes).unwrap_or_default();
        let token = v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .unwrap_or("");
        *self.bearer.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("Bearer {token}"));
        self.once(&method, &url, headers, &body).await
    }

    /// A request that must answer `want`; anything else is an error
    /// naming `what`.
    async fn expect(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
        want: StatusCode,
        what: impl FnOnce() -> String,
    ) -> Result<HeaderMap> {
        let (status, h, body) = self.send(method, path, headers, Bytes::new()).await?;
        if status == want {
            Ok(h)
        } else {
            Err(fail(&what(), status, &body))
        }
    }

    /// A manifest by tag or digest: (media type, bytes).
    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<Option<(String, Bytes)>> {
        let accept = crate::manifest::media::ALL.join(", ");
        let (status, headers, body) = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[(header::ACCEPT, accept)],
                Bytes::new(),
            )
            .await?;
        match status {
            StatusCode::OK => {
                let mt = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(crate::manifest::media::OCI_MANIFEST)
                    .to_owned();
                Ok(Some((mt, body)))
            }
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(fail(&format!("{}/{repo}:{reference}", self.base), s, &body)),
        }
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<()> {
        let (status, _, body) = self
            .send(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[(header::CONTENT_TYPE, media_type.to_owned())],
                bytes,
            )
            .await?;
        if status == StatusCode::CREATED {
            Ok(())
        } else {
            Err(fail(
                &format!("{}/{repo}:{reference}", self.base),
                status,
                &body,
            ))
        }
    }

    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> Result<bool> {
        let (status, _, body) = self
            .send(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[],
                Bytes::new(),
            )
            .await?;
        match status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(fail(
                &format!("deleting {}/{repo}:{reference}", self.base),
                s,
                &body,
            )),
        }
    }

    pub async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let (status, _, body) = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/tags/list"),
                &[],
                Bytes::new(),
            )
            .await?;
        if !status.is_success() {
            return Err(fail(
                &format!("tags of {}/{repo}", self.base),
                status,
                &body,
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn has_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        let (status, _, _) = self
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                Bytes::new(),
            )
            .await?;
        Ok(status.is_success())
    }

    /// A blob's size (its `Content-Length`), or `None` if there is none.
    pub async fn blob_size(&self, repo: &str, digest: &str) -> Result<Option<u64>> {
        let (status, headers, _) = self
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                Bytes::new(),
            )
            .await?;
        if !status.is_success() {
            return Ok(None);
        }
        Ok(headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// A range of a blob's bytes.
    pub async fn blob_range(
        &self,
        repo: &str,
        digest: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes> {
        let range = format!("bytes={}-{}", offset, offset + len.max(1) - 1);
        let headers = [(header::RANGE, range)];
        let (mut status, mut got, mut body) = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
                &headers,
                Bytes::new(),
            )
            .await?;
        // Blob storage elsewhere (S3, a CDN): follow, without credentials
        // (`once` sends them only to this registry's origin).
        for _ in 0..3 {
            if !status.is_redirection() {
                break;
            }
            let Some(next) = got.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
                break;
            };
            let next = self.url(next);
            (status, got, body) = self
                .once(&Method::GET, &next, &headers, &Bytes::new())
                .await?;
        }
        match status {
            StatusCode::PARTIAL_CONTENT => Ok(body),
            // The whole blob for a range: fine if that is all there is.
            StatusCode::OK if offset == 0 && body.len() as u64 == len => Ok(body),
            StatusCode::OK => Err(Error::RemoteRefused(format!(
                "{}: it ignores Range requests, which copying {digest} in pieces needs",
                self.base
            ))),
            s => Err(fail(&format!("reading {digest}"), s, &body)),
        }
    }

    fn location(&self, headers: &HeaderMap) -> Result<String> {
        let loc = headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Remote("an upload answer has no Location".into()))?;
        Ok(self.url(loc))
    }

    /// The offset an upload session is at (from its `Range`), or `None` if
    /// the target no longer has the session.
    async fn upload_offset(&self, location: &str) -> Result<Option<u64>> {
        let (status, headers, _) = self.send(Method::GET, location, &[], Bytes::new()).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Error::Remote(format!("upload status: {status}")));
        }
        let end = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.rsplit('-').next())
            .and_then(|n| n.parse::<u64>().ok());
        Ok(Some(end.map_or(0, |e| e + 1)))
    }

    async fn start_upload(&self, repo: &str) -> Result<String> {
        let path = format!("/v2/{repo}/blobs/uploads/");
        let headers = self
            .expect(Method::POST, &path, &[], StatusCode::ACCEPTED, || {
                format!("starting an upload to {repo}")
            })
            .await?;
        self.location(&headers)
    }

    /// Pushes one blob: nothing if the target has it, a mount from
    /// `mount_from` (a repository of the target) if it can, else an upload
    /// in pieces that resumes where the target says it is after a failure.
    pub async fn push_blob(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        mount_from: Option<&str>,
        source: &impl BlobSource,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Pushed> {
        if self.has_blob(repo, digest).await? {
            progress(size);
            return Ok(Pushed::Present);
        }
        if let Some(from) = mount_from.filter(|f| *f != repo) {
            let (status, _, _) = self
                .send(
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
                    &[],
                    Bytes::new(),
                )
                .await?;
            if status == StatusCode::CREATED {
                progress(size);
                return Ok(Pushed::Mounted);
            }
        }
        let mut location = self.start_upload(repo).await?;
        let mut offset = 0u64;
        let mut resumed = 0u32;
        let mut failures = 0u32;
        while offset < size {
            let len = PIECE_BYTES.min(size - offset);
            let piece = match source.read(offset, len).await {
                Ok(p) => p,
                Err(e) => return Err(e),
            };
            let range = format!("{}-{}", offset, offset + len - 1);
            let sent = self
                .send(
                    Method::PATCH,
                    &location,
                    &[
                        (header::CONTENT_TYPE, "application/octet-stream".into()),
                        (header::CONTENT_RANGE, range),
                    ],
                    piece,
                )
                .await;
            self.sent.fetch_add(len, Ordering::Relaxed);
            match sent {
                Ok((StatusCode::ACCEPTED, headers, _)) => {
                    location = self.location(&headers)?;
                    offset += len;
                    progress(len);
                    failures = 0;
                    continue;
                }
                Ok((status, _, body))
                    if status.is_client_error() && status != StatusCode::RANGE_NOT_SATISFIABLE =>
                {
                    return Err(fail(&format!("uploading {digest}"), status, &body));
                }
                Ok((status, _, _)) => {
                    tracing::warn!(%digest, offset, %status, "an upload piece failed; resuming");
                }
                Err(e) => {
                    tracing::warn!(%digest, offset, error = %e, "an upload piece failed; resuming")
                }
            }
            failures += 1;
            if failures > PIECE_ATTEMPTS {
                return Err(Error::Remote(format!(
                    "uploading {digest} to {}: {PIECE_ATTEMPTS} attempts at byte {offset} failed",
                    self.base
                )));
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))).await;
            // Where is the target now? Resume there (or anew if it lost it).
            match self.upload_offset(&location).await {
                Ok(Some(at)) if at <= size => {
                    tracing::warn!(%digest, sent_to = offset, target_at = at, "resuming the upload where the target is");
                    if at != offset {
                        progress(at.saturating_sub(offset));
                    }
                    offset = at;
                    resumed += 1;
                }
                Ok(_) => {
                    location = self.start_upload(repo).await?;
                    offset = 0;
                }
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "the target did not say where the upload is")
                }
            }
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = format!("{location}{sep}digest={digest}");
        self.expect(Method::PUT, &done, &[], StatusCode::CREATED, || {
            format!("finishing the upload of {digest}")
        })
        .await?;
        Ok(Pushed::Uploaded {
            bytes: size,
            resumed,
        })
    }
}

/// The descriptors a manifest lists: `(digest, size, is a manifest)`.
pub fn descriptors(bytes: &[u8]) -> Vec<(String, u64, bool)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let mut out = Vec::new();
    let mut add = |d: &serde_json::Value, manifest: bool| {
        if let (Some(digest), Some(size)) = (d["digest"].as_str(), d["size"].as_u64()) {
            out.push((digest.to_owned(), size, manifest));
        }
    };
    if v["config"].is_object() {
        add(&v["config"], false);
    }
    for l in v["layers"].as_array().into_iter().flatten() {
        add(l, false);
    }
    for m in v["manifests"].as_array().into_iter().flatten() {
        add(m, true);
    }
    out
}
