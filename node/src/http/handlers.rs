//! One function per OCI endpoint and method: read what the request says
//! (path already parsed into an `Endpoint`), call the registry, and build
//! the response with the status and headers the distribution-spec requires.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use stowage_storage::meta::policy::ImmutableTags;
use stowage_storage::meta::quota::Quota;
use stowage_storage::meta::retention::RetentionRule;
use stowage_storage::meta::TagExpect;
use stowage_storage::types::{Digest, Reference, RepoName, Tag, UploadId};

use super::body::{self, Body};
use super::router::{Admin, Oci, Query};
use crate::error::{Error, Result};
use crate::registry::{ChunkBounds, Registry};

/// Largest page of tags or repositories one response carries; a client
/// asking for more gets this many and a `Link` to the rest.
const MAX_PAGE_ENTRIES: usize = 10_000;

/// Admin requests are small JSON documents.
const ADMIN_BODY_LIMIT_BYTES: usize = 64 * 1024;

const DIGEST_HEADER: &str = "Docker-Content-Digest";
const UPLOAD_UUID_HEADER: &str = "Docker-Upload-UUID";

fn builder(status: StatusCode) -> http::response::Builder {
    Response::builder().status(status)
}

fn finish(b: http::response::Builder, body: Body) -> Result<Response<Body>> {
    b.body(body)
        .map_err(|_| Error::Unavailable("response headers did not build".into()))
}

fn no_content(b: http::response::Builder) -> Result<Response<Body>> {
    finish(b.header(header::CONTENT_LENGTH, 0), body::empty())
}

fn json_response(
    b: http::response::Builder,
    value: &serde_json::Value,
    head_only: bool,
) -> Result<Response<Body>> {
    text_response(b, value.to_string(), head_only)
}

/// A whole text body with its length; for `HEAD`, only the length.
fn text_response(
    b: http::response::Builder,
    text: String,
    head_only: bool,
) -> Result<Response<Body>> {
    let b = b.header(header::CONTENT_LENGTH, text.len());
    finish(
        b,
        if head_only {
            body::empty()
        } else {
            body::full(text)
        },
    )
}

/// Runs one of Stowage's own routes (the token endpoint, accounts, rules and
/// keys are answered by `access.rs` before this is reached).
pub async fn admin(
    reg: &Arc<Registry>,
    method: &Method,
    route: Admin,
    query: &Query,
    body: Incoming,
) -> Result<Response<Body>> {
    let head = method == Method::HEAD;
    let read = method == Method::GET || head;
    match route {
        Admin::Health if read => finish(
            builder(StatusCode::OK).header(header::CONTENT_TYPE, "text/plain"),
            body::full("ok\n"),
        ),
        Admin::Ready if read => {
            reg.readiness().await?;
            finish(builder(StatusCode::OK), body::full("ready\n"))
        }
        Admin::Status if read => admin_json(&crate::admin::status(reg).await?, head),
        Admin::Page if read => {
            let html = crate::page::render(&crate::admin::status(reg).await?);
            let resp = builder(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                .header(header::CACHE_CONTROL, "no-store");
            text_response(resp, html, head)
        }
        Admin::Metrics if read => {
            let text = crate::admin::metrics(reg).await?;
            let resp = builder(StatusCode::OK).header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            );
            text_response(resp, text, head)
        }
        Admin::Members if method == Method::POST => {
            let bytes = read_capped(body, ADMIN_BODY_LIMIT_BYTES).await?;
            let req: crate::admin::MembersRequest =
                serde_json::from_slice(&bytes).map_err(|e| Error::AdminRequest(e.to_string()))?;
            let summary = reg.consensus().change_members(req.try_into()?).await?;
            admin_json(&json!({ "summary": summary }), false)
        }
        Admin::Gc if read => {
            let status = reg.lifecycle().gc_status().await?;
            admin_json(&status, head)
        }
        Admin::Gc if method == Method::POST => {
            let dry_run = matches!(query.get("dry_run"), Some("1" | "true" | ""));
            let report = reg.lifecycle().gc_run(dry_run).await?;
            admin_json(&report, false)
        }
        Admin::Immutable if read => {
            admin_json(&json!({ "rules": reg.immutable_tags().await? }), head)
        }
        Admin::Immutable if method == Method::POST => {
            let bytes = read_capped(body, ADMIN_BODY_LIMIT_BYTES).await?;
            let req: crate::admin::ImmutableRequest =
                serde_json::from_slice(&bytes).map_err(|e| Error::AdminRequest(e.to_string()))?;
            let rule = ImmutableTags::new(&req.repositories, &req.tags)
                .map_err(|e| Error::AdminRequest(e.to_string()))?;
            let add = match req.op.as_str() {
                "add" => true,
                "remove" => false,
                other => return Err(Error::AdminRequest(format!("op {other:?}: add or remove"))),
            };
            reg.change_immutable_tags(rule, add).await?;
            admin_json(&json!({ "rules": reg.immutable_tags().await? }), false)
        }
        Admin::Quotas if read => admin_json(&json!({ "quotas": reg.quotas().await? }), head),
        Admin::Quotas if method == Method::POST => {
            let bytes = read_capped(body, ADMIN_BODY_LIMIT_BYTES).await?;
            let req: crate::admin::QuotaRequest =
                serde_json::from_slice(&bytes).map_err(|e| Error::AdminRequest(e.to_string()))?;
            let quota = match req.op.as_str() {
                "set" => Some(
                    Quota::new(&req.namespace, req.max_bytes, req.max_repositories)
                        .map_err(|e| Error::AdminRequest(e.to_string()))?,
                ),
                "remove" => None,
                other => return Err(Error::AdminRequest(format!("op {other:?}: set or remove"))),
            };
            reg.change_quota(&req.namespace, quota).await?;
            admin_json(&json!({ "quotas": reg.quotas().await? }), false)
        }
        Admin::Replication if read => {
            admin_json(&json!({ "rules": reg.replication().await? }), head)
        }
        Admin::Replication if method == Method::POST => {
            let bytes = read_capped(body, ADMIN_BODY_LIMIT_BYTES).await?;
            let req: crate::admin::ReplicationRequest =
                serde_json::from_slice(&bytes).map_err(|e| Error::AdminRequest(e.to_string()))?;
            let op = req.op.clone();
            reg.change_replication(&op, req.into_rule()).await?;
            admin_json(&json!({ "rules": reg.replication().await? }), false)
        }
        Admin::Mirrors if read => {
            let rules: Vec<_> = reg.mirrors()?.iter().map(|m| m.masked()).collect();
            admin_json(&json!({ "mirrors": rules }), head)
        }
        Admin::Mirrors if method == Method::POST => {
            let bytes = read_capped(body, ADMIN_BODY_LIMIT_BYTES).await?;
            let req: crate::admin::MirrorRequest =
                serde_json::from_slice(&bytes).map_err(|e| Error::AdminRequest(e.to_string()))?;
            let name = req.name.clone();
            let rule = match req.op.as_str() {
                "add" => Some(req.into_rule()),
                "remove" => None,
                other => return Err(Error::AdminRequest(format!("op {other:?}: add or remove"))),
            };
            reg.change_mirror(&name, rule).await?;
            let rules: Vec<_> = reg.mirrors()?.iter().map(|m| m.masked()).collect();
            admin_json(&json!({ "mirrors": rules }), false)
        }
        Admin::Retention if read => {
            admin_json(&json!({ "rules": reg.retention_rules().await? }), head)
        }
        Admin::Retention if method == Method::POST => {
            let bytes = read_capped(body, ADMIN_BODY_LIMIT_BYTES).await?;
            let req: crate::admin::RetentionRequest =
                serde_json::from_slice(&bytes).map_err(|e| Error::AdminRequest(e.to_string()))?;
            let rule = match req.op.as_str() {
                "set" => {
                    let rule = RetentionRule {
                        repositories: req.repositories.clone(),
                        keep_last: req.keep_last,
                        keep_within_secs: req.keep_within_secs,
                        keep_tags: req.keep_tags,
                        untagged_after_secs: req.untagged_after_secs,
                    };
                    rule.check()
                        .map_err(|e| Error::AdminRequest(e.to_string()))?;
                    Some(rule)
                }
                "remove" => None,
                other => return Err(Error::AdminRequest(format!("op {other:?}: set or remove"))),
            };
            reg.change_retention(&req.repositories, rule).await?;
            admin_json(&json!({ "rules": reg.retention_rules().await? }), false)
        }
        Admin::Backup if read => admin_json(&json!({ "job": reg.backups().status() }), head),
        Admin::Backup if method == Method::POST => {
            let bytes = read_capped(body, ADMIN_BODY_LIMIT_BYTES).await?;
            let req: crate::admin::BackupRequest =
                serde_json::from_slice(&bytes).map_err(|e| Error::AdminRequest(e.to_string()))?;
            let backups = reg.backups();
            let key = match req.key.as_deref() {
                Some(hex) => {
                    Some(crate::backup::repo::Key::parse(hex).map_err(Error::AdminRequest)?)
                }
                None => backups.config.key.clone(),
            };
            let repo = req
                .repo
                .or_else(|| backups.config.repo.clone())
                .ok_or_else(|| {
                    Error::AdminRequest("no repository given and no backup_repo configured".into())
                })?;
            admin_json(&json!({ "job": backups.start(repo, key)? }), false)
        }
        Admin::Scrub if read => admin_json(&reg.lifecycle().scrub_status(), head),
        Admin::Scrub if method == Method::POST => admin_json(&reg.lifecycle().scrub_run(), false),
        other => Err(Error::MethodNotAllowed {
            method: method.clone(),
            allow: other.allow(),
        }),
    }
}

/// Runs one OCI Distribution route.
pub async fn oci(
    reg: &Arc<Registry>,
    visible: &(dyn Fn(&str) -> bool + Sync),
    method: &Method,
    route: Oci,
    query: &Query,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Response<Body>> {
    let head = method == Method::HEAD;
    let read = method == Method::GET || head;
    match route {
        Oci::ApiVersion if read => json_response(
            builder(StatusCode::OK).header(header::CONTENT_TYPE, "application/json"),
            &json!({}),
            head,
        ),
        Oci::Catalog if read => catalog(reg, visible, query, head).await,
        Oci::Blob { repo, digest } if read => get_blob(reg, &repo, &digest, headers, head).await,
        Oci::Blob { repo, digest } if method == Method::DELETE => {
            reg.delete_blob(&repo, &digest).await?;
            no_content(builder(StatusCode::ACCEPTED))
        }
        Oci::StartUpload { repo } if method == Method::POST => {
            start_upload(reg, &repo, query, headers, body).await
        }
        Oci::Upload { repo, id } if method == Method::GET => {
            let size = reg.upload_offset(&repo, &id).await?;
            no_content(upload_headers(
                builder(StatusCode::NO_CONTENT),
                &repo,
                &id,
                size,
            ))
        }
        Oci::Upload { repo, id } if method == Method::PATCH => {
            let bounds = chunk_bounds(headers)?;
            let size = reg.upload_append(&repo, &id, bounds, body).await?;
            no_content(upload_headers(
                builder(StatusCode::ACCEPTED),
                &repo,
                &id,
                size,
            ))
        }
        Oci::Upload { repo, id } if method == Method::PUT => {
            let digest = required_digest(query)?;
            let bounds = chunk_bounds(headers)?;
            reg.upload_finish(&repo, &id, &digest, bounds, body).await?;
            blob_created(&repo, &digest)
        }
        Oci::Upload { repo, id } if method == Method::DELETE => {
            reg.upload_cancel(&repo, &id).await?;
            no_content(builder(StatusCode::NO_CONTENT))
        }
        Oci::Manifest { repo, reference } if read => {
            get_manifest(reg, &repo, &reference, headers, head).await
        }
        Oci::Manifest { repo, reference } if method == Method::PUT => {
            put_manifest(reg, &repo, &reference, query, headers, body).await
        }
        Oci::Manifest { repo, reference } if method == Method::DELETE => {
            reg.delete_manifest(&repo, &reference).await?;
            no_content(builder(StatusCode::ACCEPTED))
        }
        Oci::Tags { repo } if read => tags(reg, &repo, query, head).await,
        Oci::Referrers { repo, digest } if read => {
            referrers(reg, &repo, &digest, query, head).await
        }
        other => Err(Error::MethodNotAllowed {
            method: method.clone(),
            allow: other.allow(),
        }),
    }
}

/// An admin answer: a serde value as JSON with `200`.
pub(super) fn admin_json(value: &impl serde::Serialize, head: bool) -> Result<Response<Body>> {
    let value = serde_json::to_value(value).map_err(|e| Error::AdminRequest(e.to_string()))?;
    json_response(
        builder(StatusCode::OK).header(header::CONTENT_TYPE, "application/json"),
        &value,
        head,
    )
}

// ---- blobs ----

async fn get_blob(
    reg: &Registry,
    repo: &RepoName,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>> {
    let record = reg.blob(repo, digest).await?;
    let size = record.size;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => parse_byte_range(r, size)?,
        None => None,
    };
    let b = builder(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""))
        .header(DIGEST_HEADER, digest.as_str());
    let (b, start, end) = match range {
        Some((start, end)) => (
            b.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{size}", end - 1),
            ),
            start,
            end,
        ),
        None => (b, 0, size),
    };
    let b = b.header(header::CONTENT_LENGTH, end - start);
    if head || start == end {
        return finish(b, body::empty());
    }
    // Checked before the status line: a blob that cannot be served whole
    // is an error, never a truncated 200.
    let stream = reg.blob_stream(&record, start, end).await?;
    finish(b, body::channel(stream))
}

/// Parses a single `Range: bytes=…` into a half-open `[start, end)`. Forms
/// this does not serve (several ranges, other units) yield `None`: the whole
/// blob, as RFC 9110 allows.
fn parse_byte_range(value: &str, size: u64) -> Result<Option<(u64, u64)>> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec
        .split_once('-')
        .ok_or(Error::RangeNotSatisfiable { size })?;
    let (a, b) = (a.trim(), b.trim());
    let unsatisfiable = Error::RangeNotSatisfiable { size };
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| Error::RangeNotSatisfiable { size })?;
        if n == 0 {
            return Err(unsatisfiable);
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().map_err(|_| Error::RangeNotSatisfiable { size })?;
        let end = if b.is_empty() {
            size
        } else {
            let last: u64 = b.parse().map_err(|_| Error::RangeNotSatisfiable { size })?;
            if last < start {
                return Err(unsatisfiable);
            }
            (last + 1).min(size)
        };
        (start, end)
    };
    if range.0 >= size {
        return Err(unsatisfiable);
    }
    Ok(Some(range))
}

// ---- uploads ----

fn upload_location(repo: &RepoName, id: &UploadId) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn upload_headers(
    b: http::response::Builder,
    repo: &RepoName,
    id: &UploadId,
    size: u64,
) -> http::response::Builder {
    b.header(header::LOCATION, upload_location(repo, id))
        .header(header::RANGE, format!("0-{}", size.saturating_sub(1)))
        .header(UPLOAD_UUID_HEADER, id.as_str())
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Result<Response<Body>> {
    no_content(
        builder(StatusCode::CREATED)
            .header(header::LOCATION, format!("/v2/{repo}/blobs/{digest}"))
            .header(DIGEST_HEADER, digest.as_str()),
    )
}

fn required_digest(query: &Query) -> Result<Digest> {
    let d = query.get("digest").ok_or_else(|| {
        Error::DigestInvalid("the digest query parameter is required to finish an upload".into())
    })?;
    Digest::parse(d).map_err(Error::from_parse)
}

pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or(Error::SizeInvalid("Content-Length is not a number")),
    }
}

/// `Content-Range: <start>-<end>` (inclusive; a `bytes` unit is tolerated)
/// and `Content-Length`, which must agree when both are present.
fn chunk_bounds(headers: &HeaderMap) -> Result<ChunkBounds> {
    let len = content_length(headers)?;
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(ChunkBounds { start: None, len });
    };
    let bad = || Error::BlobUploadInvalid("Content-Range must be <start>-<end>");
    let text = v.to_str().map_err(|_| bad())?.trim();
    let text = text
        .strip_prefix("bytes=")
        .or_else(|| text.strip_prefix("bytes "))
        .unwrap_or(text);
    let text = text.split('/').next().unwrap_or(text);
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = b.trim().parse().map_err(|_| bad())?;
    if end < start {
        return Err(bad());
    }
    let range_len = end - start + 1;
    if len.is_some_and(|l| l != range_len) {
        return Err(Error::SizeInvalid(
            "Content-Length does not match Content-Range",
        ));
    }
    Ok(ChunkBounds {
        start: Some(start),
        len: Some(range_len),
    })
}

async fn start_upload(
    reg: &Registry,
    repo: &RepoName,
    query: &Query,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Response<Body>> {
    if let Some(mount) = query.get("mount") {
        // A mount that cannot happen (unknown blob, bad parameters) falls
        // back to an ordinary upload session, as clients expect.
        if let Ok(digest) = Digest::parse(mount) {
            let from = match query.get("from") {
                Some(f) => RepoName::parse(f).ok(),
                None => None,
            };
            let bad_from = query.get("from").is_some() && from.is_none();
            if !bad_from && reg.mount(repo, &digest, from.as_ref()).await? {
                return blob_created(repo, &digest);
            }
        }
    } else if let Some(d) = query.get("digest") {
        let digest = Digest::parse(d).map_err(Error::from_parse)?;
        reg.upload_monolithic(repo, &digest, content_length(headers)?, body)
            .await?;
        return blob_created(repo, &digest);
    }
    let id = reg.start_upload(repo).await?;
    no_content(upload_headers(builder(StatusCode::ACCEPTED), repo, &id, 0))
}

// ---- manifests ----

fn accept_list(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn get_manifest(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>> {
    let found = reg.manifest(repo, reference).await?;
    let found = reg.negotiate(repo, found, &accept_list(headers)).await?;
    let b = builder(StatusCode::OK)
        .header(header::CONTENT_TYPE, found.record.media_type.as_str())
        .header(header::CONTENT_LENGTH, found.record.bytes.len())
        .header(header::ETAG, format!("\"{}\"", found.digest))
        .header(DIGEST_HEADER, found.digest.as_str());
    let body = if head {
        body::empty()
    } else {
        body::full(Bytes::from(found.record.bytes))
    };
    finish(b, body)
}

async fn put_manifest(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
    query: &Query,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Response<Body>> {
    let limit = reg.settings.max_manifest_bytes;
    let bytes = read_capped(body, limit).await?;
    reg.metrics().received(bytes.len());
    let extra_tags = query
        .all("tag")
        .map(|t| Tag::parse(t).map_err(Error::from_parse))
        .collect::<Result<Vec<_>>>()?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let expect = tag_expectation(headers)?;
    let (digest, subject) = reg
        .put_manifest(
            repo,
            reference,
            extra_tags.clone(),
            content_type,
            bytes.to_vec(),
            expect,
        )
        .await?;
    let mut b = builder(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{repo}/manifests/{digest}"))
        .header(DIGEST_HEADER, digest.as_str())
        .header(header::ETAG, format!("\"{digest}\""));
    if let Some(s) = subject {
        b = b.header("OCI-Subject", s.as_str());
    }
    // distribution-spec (main): one OCI-Tag per `?tag=` the push set.
    for t in &extra_tags {
        b = b.header("OCI-Tag", t.as_str());
    }
    no_content(b)
}

/// Compare-and-swap on a tag (a Stowage extension): `If-Match: "<digest>"`
/// updates only a tag that still points there, `If-None-Match: *` only
/// creates one. Both answer 412 otherwise.
fn tag_expectation(headers: &HeaderMap) -> Result<Option<TagExpect>> {
    if let Some(v) = headers.get(header::IF_NONE_MATCH) {
        return match v.to_str().map(str::trim) {
            Ok("*") => Ok(Some(TagExpect::Absent)),
            _ => Err(Error::BadHeader {
                name: "If-None-Match",
                reason: "only `*` (create the tag if it does not exist) is understood".into(),
            }),
        };
    }
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    let unquoted = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    Digest::parse(unquoted)
        .map(|d| Some(TagExpect::At(d)))
        .map_err(|_| Error::BadHeader {
            name: "If-Match",
            reason: "expected the quoted digest the tag points at, as its ETag gives it".into(),
        })
}

/// A client that sends more than this past a limit has its connection
/// closed; below it, the excess is read and dropped so the client sees the
/// error answer instead of a reset.
const DRAIN_LIMIT_BYTES: u64 = 16 << 20;

/// Reads a body of at most `limit` bytes (manifests, admin requests).
pub(super) async fn read_capped(mut body: Incoming, limit: usize) -> Result<Bytes> {
    let mut buf = bytes::BytesMut::new();
    let mut drained = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Body(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if drained > 0 || buf.len() + data.len() > limit {
            drained += data.len() as u64;
            if drained > DRAIN_LIMIT_BYTES {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&data);
    }
    if drained > 0 {
        return Err(Error::ManifestTooLarge { limit_bytes: limit });
    }
    Ok(buf.freeze())
}

// ---- listings ----

/// `n` and `last` of a paginated listing; `n` is capped at a page.
fn page_params(query: &Query) -> Result<(usize, Option<&str>)> {
    let n = match query.get("n") {
        None => MAX_PAGE_ENTRIES,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| Error::Unsupported("n must be a non-negative integer"))?
            .min(MAX_PAGE_ENTRIES),
    };
    Ok((n, query.get("last").filter(|l| !l.is_empty())))
}

fn next_link(path: &str, n: usize, last: &str) -> String {
    let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
    format!("<{path}?n={n}&last={last}>; rel=\"next\"")
}

async fn tags(
    reg: &Registry,
    repo: &RepoName,
    query: &Query,
    head: bool,
) -> Result<Response<Body>> {
    let (n, last) = page_params(query)?;
    let (tags, more) = reg.tags(repo, last, n).await?;
    let mut b = builder(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
    if let (true, Some(t)) = (more, tags.last()) {
        b = b.header(
            header::LINK,
            next_link(&format!("/v2/{repo}/tags/list"), n, t.as_str()),
        );
    }
    let names: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
    json_response(b, &json!({ "name": repo.as_str(), "tags": names }), head)
}

/// The catalog as the caller may see it: only repositories `visible`
/// (pullable) count towards the page, and the next page starts after the
/// last name looked at.
async fn catalog(
    reg: &Registry,
    visible: &(dyn Fn(&str) -> bool + Sync),
    query: &Query,
    head: bool,
) -> Result<Response<Body>> {
    let (n, last) = page_params(query)?;
    let mut shown: Vec<RepoName> = Vec::new();
    let mut cursor = last.map(str::to_owned);
    let mut more = false;
    while shown.len() < n {
        let (repos, page_more) = reg.catalog(cursor.as_deref(), n - shown.len()).await?;
        more = page_more;
        cursor = repos.last().map(|r| r.as_str().to_owned()).or(cursor);
        shown.extend(repos.into_iter().filter(|r| visible(r.as_str())));
        if !page_more {
            break;
        }
    }
    let mut b = builder(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
    if let (true, Some(r)) = (more, cursor.as_deref()) {
        b = b.header(header::LINK, next_link("/v2/_catalog", n, r));
    }
    let names: Vec<&str> = shown.iter().map(|r| r.as_str()).collect();
    json_response(b, &json!({ "repositories": names }), head)
}

async fn referrers(
    reg: &Registry,
    repo: &RepoName,
    subject: &Digest,
    query: &Query,
    head: bool,
) -> Result<Response<Body>> {
    let found = reg
        .referrers(repo, subject, query.get("artifactType"))
        .await?;
    let manifests: Vec<serde_json::Value> = found
        .descriptors
        .iter()
        .map(|d| {
            let mut v = json!({
                "mediaType": d.media_type,
                "digest": d.digest.as_str(),
                "size": d.size,
            });
            if let Some(at) = &d.artifact_type {
                v["artifactType"] = json!(at);
            }
            if let Some(a) = &d.annotations {
                v["annotations"] = json!(a);
            }
            v
        })
        .collect();
    let mut b =
        builder(StatusCode::OK).header(header::CONTENT_TYPE, crate::manifest::media::OCI_INDEX);
    if found.filtered_by_artifact_type {
        b = b.header("OCI-Filters-Applied", "artifactType");
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": crate::manifest::media::OCI_INDEX,
        "manifests": manifests,
    });
    json_response(b, &index, head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        assert_eq!(parse_byte_range("bytes=0-9", 100).unwrap(), Some((0, 10)));
        assert_eq!(parse_byte_range("bytes=90-", 100).unwrap(), Some((90, 100)));
        assert_eq!(parse_byte_range("bytes=-10", 100).unwrap(), Some((90, 100)));
        assert_eq!(
            parse_byte_range("bytes=50-1000", 100).unwrap(),
            Some((50, 100))
        );
        assert_eq!(parse_byte_range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(parse_byte_range("items=0-1", 100).unwrap(), None);
        for bad in [
            "bytes=100-",
            "bytes=5-2",
            "bytes=-0",
            "bytes=x-1",
            "bytes=0-0",
        ] {
            let size = if bad == "bytes=0-0" { 0 } else { 100 };
            assert!(parse_byte_range(bad, size).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_range_forms() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "0-99".parse().unwrap());
        let b = chunk_bounds(&h).unwrap();
        assert_eq!((b.start, b.len), (Some(0), Some(100)));
        h.insert(header::CONTENT_RANGE, "bytes 100-199/*".parse().unwrap());
        assert_eq!(chunk_bounds(&h).unwrap().start, Some(100));
        h.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        assert!(chunk_bounds(&h).is_err());
        h.insert(header::CONTENT_RANGE, "9-3".parse().unwrap());
        assert!(chunk_bounds(&h).is_err());
    }

    #[test]
    fn link_encodes_last() {
        assert_eq!(
            next_link("/v2/_catalog", 2, "a/b"),
            "</v2/_catalog?n=2&last=a%2Fb>; rel=\"next\""
        );
    }
}
