//! Parses a request path into a typed `Endpoint`. OCI paths are matched from
//! the right (`…/blobs/<digest>`, `…/manifests/<ref>`, `…/tags/list`) so that
//! repository names of any depth work, and identifiers are validated here, at
//! the edge, so handlers only ever see well-formed values.

use http::Method;
use percent_encoding::percent_decode_str;
use stowage_storage::meta::access::AccountKind;
use stowage_storage::types::{AccountName, Digest, Reference, RepoName, UploadId};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
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
    /// `/healthz`: the process is alive.
    Health,
    /// `/readyz`: the node can serve.
    Ready,
    /// `/_stowage/status`: the admin status report.
    Status,
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
}

impl Endpoint {
    /// The methods an endpoint answers, for `Allow` on a 405.
    pub fn allow(&self) -> &'static str {
        match self {
            Endpoint::ApiVersion
            | Endpoint::Catalog
            | Endpoint::Tags { .. }
            | Endpoint::Referrers { .. }
            | Endpoint::Health
            | Endpoint::Ready
            | Endpoint::Status => "GET, HEAD",
            Endpoint::Members | Endpoint::Keys => "POST",
            Endpoint::Token => "GET, POST",
            Endpoint::Accounts { name: None, .. } => "GET, HEAD, POST",
            Endpoint::Accounts { name: Some(_), .. } => "PUT, DELETE",
            Endpoint::Access => "GET, HEAD, POST, PUT",
            Endpoint::Gc | Endpoint::Scrub => "GET, HEAD, POST",
            Endpoint::Blob { .. } => "GET, HEAD, DELETE",
            Endpoint::StartUpload { .. } => "POST",
            Endpoint::Upload { .. } => "GET, PATCH, PUT, DELETE",
            Endpoint::Manifest { .. } => "GET, HEAD, PUT, DELETE",
        }
    }
}

pub fn route(method: &Method, path: &str) -> Result<Endpoint> {
    match path {
        "/healthz" => return Ok(Endpoint::Health),
        "/readyz" => return Ok(Endpoint::Ready),
        "/_stowage/status" => return Ok(Endpoint::Status),
        "/_stowage/members" => return Ok(Endpoint::Members),
        "/_stowage/gc" => return Ok(Endpoint::Gc),
        "/_stowage/scrub" => return Ok(Endpoint::Scrub),
        "/token" => return Ok(Endpoint::Token),
        "/_stowage/access" => return Ok(Endpoint::Access),
        "/_stowage/keys" => return Ok(Endpoint::Keys),
        "/v2" | "/v2/" => return Ok(Endpoint::ApiVersion),
        "/v2/_catalog" => return Ok(Endpoint::Catalog),
        _ => {}
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
            return Ok(Endpoint::Accounts { kind, name });
        }
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
            return Ok(Endpoint::StartUpload { repo });
        }
        let id = UploadId::parse(&last).map_err(|_| Error::BlobUploadUnknown)?;
        return Ok(Endpoint::Upload { repo, id });
    }
    if at(0, "uploads") && at(1, "blobs") {
        return Ok(Endpoint::StartUpload { repo: name(n - 2)? });
    }
    if at(1, "blobs") {
        let repo = name(n - 2)?;
        let digest = Digest::parse(&last).map_err(Error::from_parse)?;
        return Ok(Endpoint::Blob { repo, digest });
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
        return Ok(Endpoint::Manifest { repo, reference });
    }
    if at(0, "list") && at(1, "tags") {
        return Ok(Endpoint::Tags { repo: name(n - 2)? });
    }
    if at(1, "referrers") {
        let repo = name(n - 2)?;
        let digest = Digest::parse(&last).map_err(Error::from_parse)?;
        return Ok(Endpoint::Referrers { repo, digest });
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
        let cases: Vec<(String, Endpoint)> = vec![
            ("/v2/".into(), Endpoint::ApiVersion),
            ("/v2".into(), Endpoint::ApiVersion),
            ("/v2/_catalog".into(), Endpoint::Catalog),
            ("/healthz".into(), Endpoint::Health),
            ("/readyz".into(), Endpoint::Ready),
            ("/_stowage/status".into(), Endpoint::Status),
            ("/_stowage/members".into(), Endpoint::Members),
            ("/_stowage/gc".into(), Endpoint::Gc),
            ("/_stowage/scrub".into(), Endpoint::Scrub),
            ("/token".into(), Endpoint::Token),
            ("/_stowage/access".into(), Endpoint::Access),
            ("/_stowage/keys".into(), Endpoint::Keys),
            (
                "/_stowage/users".into(),
                Endpoint::Accounts {
                    kind: AccountKind::User,
                    name: None,
                },
            ),
            (
                "/_stowage/robots/ci-bot".into(),
                Endpoint::Accounts {
                    kind: AccountKind::Robot,
                    name: Some(AccountName::parse("ci-bot").unwrap()),
                },
            ),
            (
                format!("/v2/a/b/c/blobs/{D}"),
                Endpoint::Blob {
                    repo: repo("a/b/c"),
                    digest: digest.clone(),
                },
            ),
            (
                format!("/v2/a/blobs/{}", D.replace(':', "%3A")),
                Endpoint::Blob {
                    repo: repo("a"),
                    digest: digest.clone(),
                },
            ),
            (
                "/v2/x/blobs/uploads/".into(),
                Endpoint::StartUpload { repo: repo("x") },
            ),
            (
                "/v2/x/y/blobs/uploads".into(),
                Endpoint::StartUpload { repo: repo("x/y") },
            ),
            (
                format!("/v2/x/blobs/uploads/{id}"),
                Endpoint::Upload {
                    repo: repo("x"),
                    id: id.clone(),
                },
            ),
            (
                "/v2/lib/manifests/latest".into(),
                Endpoint::Manifest {
                    repo: repo("lib"),
                    reference: Reference::parse("latest").unwrap(),
                },
            ),
            (
                format!("/v2/lib/manifests/{D}"),
                Endpoint::Manifest {
                    repo: repo("lib"),
                    reference: Reference::Digest(digest.clone()),
                },
            ),
            // Names whose components look like endpoint words still work.
            (
                "/v2/manifests/blobs/manifests/v1".into(),
                Endpoint::Manifest {
                    repo: repo("manifests/blobs"),
                    reference: Reference::parse("v1").unwrap(),
                },
            ),
            (
                "/v2/tags/list/tags/list".into(),
                Endpoint::Tags {
                    repo: repo("tags/list"),
                },
            ),
            (
                format!("/v2/a/referrers/{D}"),
                Endpoint::Referrers {
                    repo: repo("a"),
                    digest,
                },
            ),
        ];
        for (path, want) in cases {
            assert_eq!(route(&Method::GET, &path).unwrap(), want, "{path}");
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
