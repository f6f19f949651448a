//! Parses a request path into a typed `Endpoint`. OCI paths are matched from
//! the right (`…/blobs/<digest>`, `…/manifests/<ref>`, `…/tags/list`) so that
//! repository names of any depth work, and identifiers are validated here, at
//! the edge, so handlers only ever see well-formed values.

use http::Method;
use percent_encoding::percent_decode_str;
use stowage_storage::meta::access::AccountKind;
use stowage_storage::types::{AccountName, Digest, Reference, RepoName, UploadId};

use crate::error::{Error, Result};

/// A request's target: the OCI Distribution API under `/v2/`, or Stowage's
/// own routes (probes, the token endpoint, `/_stowage/*`). The two are kept
/// apart so a handler of one can never be reached through the other's path
/// and so the access rules for each read as one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Oci(Oci),
    Admin(Admin),
}

/// The OCI Distribution API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Oci {
    /// `/v2/`
    ApiVersion,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/blobs/<digest>`
    Blob { repo: RepoName, digest: Digest },
    /// `/v2/<name>/blobs/uploads/`
    StartUpload { repo: RepoName },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { repo: RepoName, id: UploadId },
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        repo: RepoName,
        reference: Reference,
    },
    /// `/v2/<name>/tags/list`
    Tags { repo: RepoName },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { repo: RepoName, digest: Digest },
}

/// Stowage's own routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    /// `/healthz`: the process is alive.
    Health,
    /// `/readyz`: the node can serve.
    Ready,
    /// `/_stowage/status`: the admin status report.
    Status,
    /// `/metrics`: Prometheus metrics.
    Metrics,
    /// `/_stowage/`: the status page (HTML).
    Page,
    /// `/_stowage/members`: membership changes.
    Members,
    /// `/_stowage/gc`: garbage collection status (GET) and passes (POST).
    Gc,
    /// `/_stowage/scrub`: scrub status (GET) and passes (POST).
    Scrub,
    /// `/token`: the registry token endpoint (Docker/OCI token flow).
    Token,
    /// `/_stowage/users[/<name>]`, `/_stowage/robots[/<name>]`: accounts.
    Accounts {
        kind: AccountKind,
        name: Option<AccountName>,
    },
    /// `/_stowage/access`: the access rules.
    Access,
    /// `/_stowage/keys`: token signing key rotation.
    Keys,
    /// `/_stowage/immutable`: immutable-tag rules.
    Immutable,
    /// `/_stowage/backup`: the running or last backup (GET), a new one (POST).
    Backup,
    /// `/_stowage/quotas`: namespace quotas with their usage.
    Quotas,
    /// `/_stowage/retention`: retention rules.
    Retention,
    /// `/_stowage/replication`: replication rules and their progress.
    Replication,
    /// `/_stowage/mirrors`: pull-through mirror rules.
    Mirrors,
}

impl Endpoint {
    /// The methods an endpoint answers, for `Allow` on a 405.
    pub fn allow(&self) -> &'static str {
        match self {
            Endpoint::Oci(o) => o.allow(),
            Endpoint::Admin(a) => a.allow(),
        }
    }
}

impl Endpoint {
    /// A stable, low-cardinality name for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::Oci(o) => match o {
                Oci::ApiVersion => "api_version",
                Oci::Catalog => "catalog",
                Oci::Blob { .. } => "blob",
                Oci::StartUpload { .. } => "upload_start",
                Oci::Upload { .. } => "upload",
                Oci::Manifest { .. } => "manifest",
                Oci::Tags { .. } => "tags",
                Oci::Referrers { .. } => "referrers",
            },
            Endpoint::Admin(a) => match a {
                Admin::Health => "healthz",
                Admin::Ready => "readyz",
                Admin::Status => "status",
                Admin::Metrics => "metrics",
                Admin::Page => "page",
                Admin::Members => "members",
                Admin::Gc => "gc",
                Admin::Scrub => "scrub",
                Admin::Token => "token",
                Admin::Accounts { .. } => "accounts",
                Admin::Access => "access",
                Admin::Keys => "keys",
                Admin::Immutable => "immutable",
                Admin::Backup => "backup",
                Admin::Quotas => "quotas",
                Admin::Retention => "retention",
                Admin::Replication => "replication",
                Admin::Mirrors => "mirrors",
            },
        }
    }
}

impl Oci {
    pub fn allow(&self) -> &'static str {
        match self {
            Oci::ApiVersion | Oci::Catalog | Oci::Tags { .. } | Oci::Referrers { .. } => {
                "GET, HEAD"
            }
            Oci::Blob { .. } => "GET, HEAD, DELETE",
            Oci::StartUpload { .. } => "POST",
            Oci::Upload { .. } => "GET, PATCH, PUT, DELETE",
            Oci::Manifest { .. } => "GET, HEAD, PUT, DELETE",
        }
    }
}

impl Admin {
    pub fn allow(&self) -> &'static str {
        match self {
            Admin::Health | Admin::Ready | Admin::Status | Admin::Metrics | Admin::Page => {
                "GET, HEAD"
            }
            Admin::Members | Admin::Keys => "POST",
            Admin::Token => "GET, POST",
            Admin::Accounts { name: None, .. } => "GET, HEAD, POST",
            Admin::Accounts { name: Some(_), .. } => "PUT, DELETE",
            Admin::Access => "GET, HEAD, POST, PUT",
            Admin::Gc
            | Admin::Scrub
            | Admin::Immutable
            | Admin::Backup
            | Admin::Quotas
            | Admin::Retention
            | Admin::Replication
            | Admin::Mirrors => "GET, HEAD, POST",
        }
    }
}

pub fn route(method: &Method, path: &str) -> Result<Endpoint> {
    if let Some(admin) = route_admin(path)? {
        return Ok(Endpoint::Admin(admin));
    }
    route_oci(method, path).map(Endpoint::Oci)
}

fn route_admin(path: &str) -> Result<Option<Admin>> {
    let fixed = match path {
        "/healthz" => Some(Admin::Health),
        "/readyz" => Some(Admin::Ready),
        "/_stowage/status" => Some(Admin::Status),
        "/metrics" => Some(Admin::Metrics),
        "/_stowage" | "/_stowage/" => Some(Admin::Page),
        "/_stowage/members" => Some(Admin::Members),
        "/_stowage/gc" => Some(Admin::Gc),
        "/_stowage/scrub" => Some(Admin::Scrub),
        "/token" => Some(Admin::Token),
        "/_stowage/access" => Some(Admin::Access),
        "/_stowage/keys" => Some(Admin::Keys),
        "/_stowage/immutable" => Some(Admin::Immutable),
        "/_stowage/backup" => Some(Admin::Backup),
        "/_stowage/quotas" => Some(Admin::Quotas),
        "/_stowage/retention" => Some(Admin::Retention),
        "/_stowage/replication" => Some(Admin::Replication),
        "/_stowage/mirrors" => Some(Admin::Mirrors),
        _ => None,
    };
    if fixed.is_some() {
        return Ok(fixed);
    }
    for (prefix, kind) in [
        ("/_stowage/users", AccountKind::User),
        ("/_stowage/robots", AccountKind::Robot),
    ] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let name = match rest.strip_prefix('/') {
                None if rest.is_empty() => None,
                None => continue,
                Some(n) => Some(
                    AccountName::parse(&decode(n)?)
                        .map_err(|e| Error::AdminRequest(e.to_string()))?,
                ),
            };
            return Ok(Some(Admin::Accounts { kind, name }));
        }
    }
    Ok(None)
}

fn route_oci(method: &Method, path: &str) -> Result<Oci> {
    match path {
        "/v2" | "/v2/" => return Ok(Oci::ApiVersion),
        "/v2/_catalog" => return Ok(Oci::Catalog),
        _ => {}
    }
    let rest = path.strip_prefix("/v2/").ok_or(Error::NotFound)?;
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name = |upto: usize| -> Result<RepoName> {
        if upto == 0 {
            return Err(Error::NotFound);
        }
        RepoName::parse(&segs[..upto].join("/")).map_err(Error::from_parse)
    };
    let last = decode(segs[n - 1])?;
    let at = |i: usize, s: &str| n > i && segs[n - 1 - i] == s;

    if at(1, "uploads") && at(2, "blobs") {
        let repo = name(n - 3)?;
        if last.is_empty() {
            return Ok(Oci::StartUpload { repo });
        }
        let id = UploadId::parse(&last).map_err(|_| Error::BlobUploadUnknown)?;
        return Ok(Oci::Upload { repo, id });
    }
    if at(0, "uploads") && at(1, "blobs") {
        return Ok(Oci::StartUpload { repo: name(n - 2)? });
    }
    if at(1, "blobs") {
        let repo = name(n - 2)?;
        let digest = Digest::parse(&last).map_err(Error::from_parse)?;
        return Ok(Oci::Blob { repo, digest });
    }
    if at(1, "manifests") {
        let repo = name(n - 2)?;
        let reference = Reference::parse(&last).map_err(|e| {
            // A malformed reference names no manifest: reads answer 404
            // like any other unknown manifest, writes say what is wrong.
            if method == Method::PUT {
                Error::from_parse(e)
            } else {
                Error::ManifestUnknown
            }
        })?;
        return Ok(Oci::Manifest { repo, reference });
    }
    if at(0, "list") && at(1, "tags") {
        return Ok(Oci::Tags { repo: name(n - 2)? });
    }
    if at(1, "referrers") {
        let repo = name(n - 2)?;
        let digest = Digest::parse(&last).map_err(Error::from_parse)?;
        return Ok(Oci::Referrers { repo, digest });
    }
    Err(Error::NotFound)
}

fn decode(segment: &str) -> Result<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::NotFound)
}

/// Query parameters of a request, decoded once.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn every_endpoint_routes() {
        let id = UploadId::new(stowage_storage::types::NodeId(3));
        let digest = Digest::parse(D).unwrap();
        let admin: Vec<(String, Admin)> = vec![
            ("/healthz".into(), Admin::Health),
            ("/readyz".into(), Admin::Ready),
            ("/_stowage/status".into(), Admin::Status),
            ("/metrics".into(), Admin::Metrics),
            ("/_stowage/".into(), Admin::Page),
            ("/_stowage/members".into(), Admin::Members),
            ("/_stowage/gc".into(), Admin::Gc),
            ("/_stowage/scrub".into(), Admin::Scrub),
            ("/token".into(), Admin::Token),
            ("/_stowage/access".into(), Admin::Access),
            ("/_stowage/keys".into(), Admin::Keys),
            ("/_stowage/immutable".into(), Admin::Immutable),
            ("/_stowage/backup".into(), Admin::Backup),
            ("/_stowage/quotas".into(), Admin::Quotas),
            ("/_stowage/retention".into(), Admin::Retention),
            ("/_stowage/replication".into(), Admin::Replication),
            ("/_stowage/mirrors".into(), Admin::Mirrors),
            (
                "/_stowage/users".into(),
                Admin::Accounts {
                    kind: AccountKind::User,
                    name: None,
                },
            ),
            (
                "/_stowage/robots/ci-bot".into(),
                Admin::Accounts {
                    kind: AccountKind::Robot,
                    name: Some(AccountName::parse("ci-bot").unwrap()),
                },
            ),
        ];
        for (path, want) in admin {
            assert_eq!(
                route(&Method::GET, &path).unwrap(),
                Endpoint::Admin(want),
                "{path}"
            );
        }
        let oci: Vec<(String, Oci)> = vec![
            ("/v2/".into(), Oci::ApiVersion),
            ("/v2".into(), Oci::ApiVersion),
            ("/v2/_catalog".into(), Oci::Catalog),
            (
                format!("/v2/a/b/c/blobs/{D}"),
                Oci::Blob {
                    repo: repo("a/b/c"),
                    digest: digest.clone(),
                },
            ),
            (
                format!("/v2/a/blobs/{}", D.replace(':', "%3A")),
                Oci::Blob {
                    repo: repo("a"),
                    digest: digest.clone(),
                },
            ),
            (
                "/v2/x/blobs/uploads/".into(),
                Oci::StartUpload { repo: repo("x") },
            ),
            (
                "/v2/x/y/blobs/uploads".into(),
                Oci::StartUpload { repo: repo("x/y") },
            ),
            (
                format!("/v2/x/blobs/uploads/{id}"),
                Oci::Upload {
                    repo: repo("x"),
                    id: id.clone(),
                },
            ),
            (
                "/v2/lib/manifests/latest".into(),
                Oci::Manifest {
                    repo: repo("lib"),
                    reference: Reference::parse("latest").unwrap(),
                },
            ),
            (
                format!("/v2/lib/manifests/{D}"),
                Oci::Manifest {
                    repo: repo("lib"),
                    reference: Reference::Digest(digest.clone()),
                },
            ),
            // Names whose components look like endpoint words still work.
            (
                "/v2/manifests/blobs/manifests/v1".into(),
                Oci::Manifest {
                    repo: repo("manifests/blobs"),
                    reference: Reference::parse("v1").unwrap(),
                },
            ),
            (
                "/v2/tags/list/tags/list".into(),
                Oci::Tags {
                    repo: repo("tags/list"),
                },
            ),
            (
                format!("/v2/a/referrers/{D}"),
                Oci::Referrers {
                    repo: repo("a"),
                    digest,
                },
            ),
        ];
        for (path, want) in oci {
            assert_eq!(
                route(&Method::GET, &path).unwrap(),
                Endpoint::Oci(want),
                "{path}"
            );
        }
    }

    #[test]
    fn bad_paths_fail_with_their_code() {
        let code_for =
            |m: Method, p: &str| crate::http::error::classify(&route(&m, p).unwrap_err()).1;
        let code = |p: &str| code_for(Method::GET, p);
        assert_eq!(code("/v2/UPPER/tags/list"), "NAME_INVALID");
        assert_eq!(code("/v2/a/blobs/sha256:nothex"), "DIGEST_INVALID");
        assert_eq!(code("/v2/a/manifests/-bad-tag"), "MANIFEST_UNKNOWN");
        assert_eq!(
            code("/v2/a/manifests/sha256:totallywrong"),
            "MANIFEST_UNKNOWN"
        );
        assert_eq!(
            code_for(Method::PUT, "/v2/a/manifests/-bad-tag"),
            "MANIFEST_INVALID"
        );
        assert_eq!(
            code_for(Method::PUT, "/v2/a/manifests/sha256:x"),
            "DIGEST_INVALID"
        );
        assert_eq!(code("/v2/a/blobs/uploads/not-an-id"), "BLOB_UPLOAD_UNKNOWN");
        assert_eq!(code("/v2/a/unknown"), "NOT_FOUND");
        assert_eq!(code("/v3/"), "NOT_FOUND");
        assert_eq!(code("/v2/blobs/x"), "NOT_FOUND");
    }

    #[test]
    fn query_decodes_repeats() {
        let q = Query::parse(Some("n=2&last=a%2Fb&tag=x&tag=y"));
        assert_eq!(q.get("n"), Some("2"));
        assert_eq!(q.get("last"), Some("a/b"));
        assert_eq!(q.all("tag").collect::<Vec<_>>(), vec!["x", "y"]);
        assert_eq!(q.get("missing"), None);
    }
}
