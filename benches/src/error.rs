//! The load generator's one error type. A workload counts an error and
//! keeps going under load; setup errors (seeding images) end the workload.

use http::{Method, StatusCode};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{method} {url}: {source}")]
    Request {
        method: Method,
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{method} {url}: reading the body: {source}")]
    Body {
        method: Method,
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{method} {url}: expected {expected}, got {status}: {body}")]
    Status {
        method: Method,
        url: String,
        expected: StatusCode,
        status: StatusCode,
        /// The start of the answer's body (an OCI error, usually).
        body: String,
    },
    #[error("{method} {url}: the answer has no Location header")]
    MissingLocation { method: Method, url: String },
    #[error("{url}: content has digest {got}, expected {expected}")]
    DigestMismatch {
        url: String,
        expected: String,
        got: String,
    },
    #[error("{url}: received {got} bytes, expected {expected}")]
    SizeMismatch {
        url: String,
        expected: u64,
        got: u64,
    },
    #[error("building a request to {url}: {source}")]
    BadRequest {
        url: String,
        #[source]
        source: http::Error,
    },
    #[error("target {0:?} is not an http:// URL")]
    BadTarget(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {source}")]
    Json {
        path: String,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// A real client (skopeo, docker) that exited with a failure; the last
    /// line of its stderr says why.
    #[error("{command}: {status}: {stderr_last_line}")]
    Command {
        command: &'static str,
        status: std::process::ExitStatus,
        stderr_last_line: String,
    },
    #[error("{command}: no exit within {} s (killed)", timeout.as_secs())]
    CommandTimeout {
        command: &'static str,
        timeout: std::time::Duration,
    },
    #[error("docker rmi left image {id} in the engine; a pull would not download it")]
    ImageStillPresent { id: String },
    #[error("invalid argument: {0}")]
    Usage(&'static str),
    #[error("the workload needs data that setup could not create: {0}")]
    Setup(Box<Error>),
    #[error("a client task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl Error {
    pub fn io(what: &'static str, path: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }
}
