//! The one place that turns an `Error` into an HTTP answer: status code, OCI
//! error code (distribution-spec "Error Codes") and the JSON envelope.

use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use super::body::{full, Body};
use crate::error::Error;

/// The status and OCI error code for `e`.
pub fn classify(e: &Error) -> (StatusCode, &'static str) {
    use Error::*;
    match e {
        BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        BlobUploadInvalid(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
        BlobUploadUnknown => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
        DigestMismatch { .. } | DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
        ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
        ManifestUnknown | ManifestNotAcceptable { .. } => {
            (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
        }
        NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
        NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
        SizeInvalid(_) => (StatusCode::BAD_REQUEST, "SIZE_INVALID"),
        ManifestTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
        UploadOutOfOrder { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
        RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "SIZE_INVALID"),
        Unsupported(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
        MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        // The spec has no code for a malformed HTTP message; UNSUPPORTED
        // ("the operation was unsupported") is the one it offers for a
        // request the registry will not carry out, and clients act on the
        // 400 anyway.
        HostHeader { .. } | BadHeader { .. } => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
        NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        Body(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
        Unavailable(_)
        | ChunkUnavailable { .. }
        | NoLeader
        | NoQuorum
        | LeaderSilent { .. }
        | Deadline { .. }
        | Behind { .. }
        | NotFreshEnough { .. } => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        // A full disk is the server's condition, not a fault in the
        // request: 507 (RFC 4918), and a code named after it as
        // UNAVAILABLE is after 503, since the spec has none. Checked before
        // the generic storage arm so ENOSPC from anywhere lands here.
        DiskFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "INSUFFICIENT_STORAGE"),
        Storage(s) if s.is_disk_full() => {
            (StatusCode::INSUFFICIENT_STORAGE, "INSUFFICIENT_STORAGE")
        }
        MembershipChange(_) => (StatusCode::CONFLICT, "MEMBERSHIP_CHANGE_REFUSED"),
        BackupRepo { .. } => (StatusCode::BAD_REQUEST, "BACKUP_REPOSITORY_INVALID"),
        BackupBusy(_) => (StatusCode::CONFLICT, "BACKUP_RUNNING"),
        BackupSource(_) => (StatusCode::INTERNAL_SERVER_ERROR, "BACKUP_FAILED"),
        BackupStore(_) => (StatusCode::BAD_GATEWAY, "BACKUP_STORAGE_FAILED"),
        Remote(_) | RemoteRefused(_) => (StatusCode::BAD_GATEWAY, "UPSTREAM_FAILED"),
        // A Stowage extension (compare-and-swap tags); the spec has no code.
        TagPrecondition { .. } => (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED"),
        TagImmutable { .. } => (StatusCode::CONFLICT, "DENIED"),
        AdminRequest(_) => (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        Storage(_) | Task(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        Denied(_) => (StatusCode::FORBIDDEN, "DENIED"),
        TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
        AccessChange(_) => (StatusCode::CONFLICT, "ACCESS_CHANGE_REFUSED"),
    }
}

/// The full response for `e`, body included unless `head_only`.
pub fn response(e: &Error, head_only: bool) -> http::Response<Body> {
    let (status, code) = classify(e);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // The cluster's condition, told to the client and logged once
        // where it changes (peers, Raft): not an error of this request.
        tracing::debug!(error = %e, "request refused: the cluster is unavailable");
    } else if status == StatusCode::INSUFFICIENT_STORAGE {
        // Logged once where it changes, by the disk watch.
        tracing::debug!(error = %e, "request refused: the disk is full");
    } else if status.is_server_error() {
        tracing::error!(error = %e, "request failed");
    } else {
        tracing::debug!(error = %e, code, "request rejected");
    }
    let detail = match e {
        Error::BlobUnknown(d) | Error::ManifestBlobUnknown(d) => json!({ "digest": d.as_str() }),
        Error::NameUnknown(n) => json!({ "name": n.as_str() }),
        Error::UploadOutOfOrder { offset, start } => json!({ "offset": offset, "start": start }),
        _ => serde_json::Value::Null,
    };
    let body = json!({
        "errors": [{ "code": code, "message": e.to_string(), "detail": detail }]
    })
    .to_string();
    let mut builder = http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len());
    match e {
        Error::MethodNotAllowed { allow, .. } => {
            builder = builder.header(header::ALLOW, HeaderValue::from_static(allow));
        }
        Error::RangeNotSatisfiable { size } => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes */{size}"));
        }
        Error::UploadOutOfOrder { offset, .. } => {
            builder = builder.header(header::RANGE, format!("0-{}", offset.saturating_sub(1)));
        }
        Error::Unauthorized { challenge, .. } if !challenge.is_empty() => {
            builder = builder.header(header::WWW_AUTHENTICATE, challenge.as_str());
        }
        Error::TooManyRequests { retry_after_secs } => {
            builder = builder.header(header::RETRY_AFTER, retry_after_secs.to_string());
        }
        _ => {}
    }
    let body = if head_only {
        super::body::empty()
    } else {
        full(body)
    };
    builder.body(body).unwrap_or_else(|_| {
        let mut r = http::Response::new(super::body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_code_has_its_status() {
        let d = stowage_storage::types::Digest::of(
            stowage_storage::types::DigestAlgorithm::Sha256,
            b"",
        );
        let cases = [
            (Error::BlobUnknown(d.clone()), 404, "BLOB_UNKNOWN"),
            (Error::BlobUploadUnknown, 404, "BLOB_UPLOAD_UNKNOWN"),
            (Error::DigestInvalid("x".into()), 400, "DIGEST_INVALID"),
            (Error::ManifestBlobUnknown(d), 400, "MANIFEST_BLOB_UNKNOWN"),
            (Error::ManifestInvalid("x".into()), 400, "MANIFEST_INVALID"),
            (Error::ManifestUnknown, 404, "MANIFEST_UNKNOWN"),
            (Error::NameInvalid("x".into()), 400, "NAME_INVALID"),
            (
                Error::ManifestTooLarge { limit_bytes: 1 },
                413,
                "SIZE_INVALID",
            ),
            (
                Error::UploadOutOfOrder {
                    offset: 1,
                    start: 5,
                },
                416,
                "BLOB_UPLOAD_INVALID",
            ),
            (Error::Unsupported("x"), 400, "UNSUPPORTED"),
            (
                Error::Unauthorized {
                    reason: "x".into(),
                    challenge: "Bearer realm=\"r\"".into(),
                },
                401,
                "UNAUTHORIZED",
            ),
            (Error::Denied("x".into()), 403, "DENIED"),
            (
                Error::TooManyRequests {
                    retry_after_secs: 3,
                },
                429,
                "TOOMANYREQUESTS",
            ),
            (Error::HostHeader { count: 2 }, 400, "UNSUPPORTED"),
            (Error::NoLeader, 503, "UNAVAILABLE"),
            (
                Error::Storage(stowage_storage::Error::DiskFull {
                    path: "/data".into(),
                    free_bytes: 10,
                    min_free_bytes: 100,
                }),
                507,
                "INSUFFICIENT_STORAGE",
            ),
            (
                Error::Storage(stowage_storage::Error::io("write", "/data/x")(
                    std::io::Error::from_raw_os_error(28),
                )),
                507,
                "INSUFFICIENT_STORAGE",
            ),
            (
                Error::DiskFull("chunk write: disk full".into()),
                507,
                "INSUFFICIENT_STORAGE",
            ),
            (
                Error::Storage(stowage_storage::Error::LogClosed),
                500,
                "UNKNOWN",
            ),
            (Error::NoQuorum, 503, "UNAVAILABLE"),
            (
                Error::LeaderSilent {
                    leader: stowage_storage::types::NodeId(2),
                    waited_ms: 1600,
                },
                503,
                "UNAVAILABLE",
            ),
        ];
        for (e, status, code) in cases {
            let (s, c) = classify(&e);
            assert_eq!((s.as_u16(), c), (status, code), "{e}");
            let r = response(&e, false);
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        }
    }
}
