//! The edge of access control: what each endpoint needs of the caller,
//! the token endpoint (`GET /token` with Basic or anonymous, `POST /token`
//! with the OAuth2 password and refresh grants that `docker login` uses),
//! and the admin API for accounts, rules and signing keys.

use std::net::IpAddr;

use http::{header, HeaderMap, Method, Response};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use stowage_storage::meta::access::{AccountKind, Actions};
use stowage_storage::types::{AccountName, RepoName};

use super::body::Body;
use super::handlers::{admin_json, read_capped};
use super::router::{Admin, Endpoint, Oci, Query};
use crate::auth::{self, Auth, Challenge, Need};
use crate::error::{Error, Result};

/// Tokens requests and admin bodies are small.
const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// What `endpoint` asks of the caller for `method`.
pub fn needs(endpoint: &Endpoint, method: &Method, query: &Query) -> Vec<Need> {
    match endpoint {
        Endpoint::Oci(route) => oci_needs(route, method, query),
        // Probes, the status report and the token endpoint are open (the
        // token endpoint checks credentials itself); every other admin
        // route, read or write, needs `admin`.
        Endpoint::Admin(
            Admin::Health
            | Admin::Ready
            | Admin::Status
            | Admin::Metrics
            | Admin::Page
            | Admin::Token,
        ) => {
            vec![Need::Nothing]
        }
        Endpoint::Admin(
            Admin::Members
            | Admin::Gc
            | Admin::Scrub
            | Admin::Accounts { .. }
            | Admin::Access
            | Admin::Keys
            | Admin::Immutable
            | Admin::Backup
            | Admin::Quotas
            | Admin::Retention
            | Admin::Replication
            | Admin::Mirrors,
        ) => vec![Need::Admin],
    }
}

fn oci_needs(route: &Oci, method: &Method, query: &Query) -> Vec<Need> {
    let read = *method == Method::GET || *method == Method::HEAD;
    let repo = |repo: &RepoName, actions| Need::Repo {
        repo: repo.clone(),
        actions,
    };
    match route {
        // Listed per repository the caller may pull.
        Oci::Catalog => vec![Need::Nothing],
        Oci::ApiVersion => vec![Need::Credential],
        Oci::Blob { repo: r, .. } | Oci::Manifest { repo: r, .. } if read => {
            vec![repo(r, Actions::PULL)]
        }
        Oci::Blob { repo: r, .. } | Oci::Manifest { repo: r, .. } if *method == Method::DELETE => {
            vec![repo(r, Actions::DELETE)]
        }
        Oci::Manifest { repo: r, .. } => vec![repo(r, Actions::PUSH)],
        Oci::Blob { repo: r, .. } => vec![repo(r, Actions::PULL)],
        Oci::StartUpload { repo: r } => {
            let mut n = vec![repo(r, Actions::PUSH)];
            // A mount reads the source: without pull there it is refused,
            // so a digest known from a private repository cannot be copied
            // out of it.
            if query.get("mount").is_some() {
                if let Some(from) = query.get("from").and_then(|f| RepoName::parse(f).ok()) {
                    n.push(repo(&from, Actions::PULL));
                }
            }
            n
        }
        Oci::Upload { repo: r, .. } => vec![repo(r, Actions::PUSH)],
        Oci::Tags { repo: r } | Oci::Referrers { repo: r, .. } => {
            vec![repo(r, Actions::PULL)]
        }
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    auth::decode_basic(rest)
}

/// `GET /token` and `POST /token`.
pub async fn token(
    auth: &Auth,
    method: &Method,
    query: &Query,
    headers: &HeaderMap,
    body: Incoming,
    peer: Option<IpAddr>,
    challenge: &Challenge,
) -> Result<Response<Body>> {
    let answer = if *method == Method::GET {
        let scopes: Vec<String> = query.all("scope").map(str::to_owned).collect();
        let offline = query.get("offline_token") == Some("true");
        let creds = basic_credentials(headers);
        if headers.contains_key(header::AUTHORIZATION) && creds.is_none() {
            return Err(Error::Unauthorized {
                reason: "the token endpoint takes Basic credentials".into(),
                challenge: "Basic realm=\"stowage\"".into(),
            });
        }
        auth.issue(
            creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
            None,
            &scopes,
            offline,
            peer,
            challenge,
        )
        .await?
    } else if *method == Method::POST {
        let bytes = read_capped(body, BODY_LIMIT_BYTES).await?;
        let form = Query::parse(std::str::from_utf8(&bytes).ok());
        let scopes: Vec<String> = form.all("scope").map(str::to_owned).collect();
        let offline = form.get("access_type") == Some("offline");
        match form.get("grant_type") {
            Some("password") => {
                let user = form.get("username").unwrap_or("");
                let pass = form.get("password").unwrap_or("");
                auth.issue(Some((user, pass)), None, &scopes, offline, peer, challenge)
                    .await?
            }
            Some("refresh_token") => {
                let refresh = form.get("refresh_token").unwrap_or("");
                auth.issue(None, Some(refresh), &scopes, true, peer, challenge)
                    .await?
            }
            other => {
                return Err(Error::AdminRequest(format!(
                    "unsupported grant_type {:?} (password, refresh_token)",
                    other.unwrap_or("")
                )))
            }
        }
    } else {
        return Err(Error::MethodNotAllowed {
            method: method.clone(),
            allow: Admin::Token.allow(),
        });
    };
    admin_json(&answer, false)
}

#[derive(Deserialize)]
struct NewAccount {
    name: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    expires_ms: Option<u64>,
}

#[derive(Deserialize)]
struct NewPassword {
    password: String,
}

#[derive(Deserialize)]
struct RuleChange {
    op: String,
    pattern: String,
    subject: String,
    actions: String,
}

#[derive(Deserialize)]
struct RuleSet {
    rules: Vec<RuleText>,
}

#[derive(Deserialize)]
struct RuleText {
    pattern: String,
    subject: String,
    actions: String,
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::AdminRequest(e.to_string()))
}

fn not_allowed(method: &Method, endpoint: &Admin) -> Error {
    Error::MethodNotAllowed {
        method: method.clone(),
        allow: endpoint.allow(),
    }
}

/// `/_stowage/users`, `/_stowage/robots` and one account under either.
pub async fn accounts(
    auth: &Auth,
    endpoint: &Admin,
    kind: AccountKind,
    name: Option<&AccountName>,
    method: &Method,
    body: Incoming,
) -> Result<Response<Body>> {
    let head = *method == Method::HEAD;
    match (name, method.clone()) {
        (None, Method::GET | Method::HEAD) => {
            let list: Vec<_> = auth
                .accounts()
                .await?
                .into_iter()
                .filter(|a| a.kind == kind)
                .collect();
            admin_json(&json!({ "accounts": list }), head)
        }
        (None, Method::POST) => {
            let req: NewAccount = parse_json(&read_capped(body, BODY_LIMIT_BYTES).await?)?;
            let name =
                AccountName::parse(&req.name).map_err(|e| Error::AdminRequest(e.to_string()))?;
            match kind {
                AccountKind::User => {
                    let password = req
                        .password
                        .ok_or_else(|| Error::AdminRequest("a user needs a password".into()))?;
                    auth.add_user(&name, &password, req.expires_ms).await?;
                    admin_json(&json!({ "name": name.as_str() }), false)
                }
                AccountKind::Robot => {
                    let token = auth.add_robot(&name, req.expires_ms).await?;
                    admin_json(&json!({ "name": name.as_str(), "token": token }), false)
                }
            }
        }
        (Some(name), Method::PUT) if kind == AccountKind::User => {
            let req: NewPassword = parse_json(&read_capped(body, BODY_LIMIT_BYTES).await?)?;
            auth.set_password(name, &req.password).await?;
            admin_json(&json!({ "name": name.as_str() }), false)
        }
        (Some(name), Method::DELETE) => {
            auth.remove_account(name).await?;
            admin_json(&json!({ "removed": name.as_str() }), false)
        }
        _ => Err(not_allowed(method, endpoint)),
    }
}

/// `/_stowage/access`: list, grant or revoke one rule, or replace them all.
pub async fn rules(auth: &Auth, method: &Method, body: Incoming) -> Result<Response<Body>> {
    match method.clone() {
        Method::GET | Method::HEAD => admin_json(
            &json!({ "rules": auth.rules().await? }),
            *method == Method::HEAD,
        ),
        Method::POST => {
            let c: RuleChange = parse_json(&read_capped(body, BODY_LIMIT_BYTES).await?)?;
            let rule = auth::rule(&c.pattern, &c.subject, &c.actions)?;
            match c.op.as_str() {
                "grant" => auth.grant(rule).await?,
                "revoke" => auth.revoke(rule).await?,
                other => {
                    return Err(Error::AdminRequest(format!(
                        "op {other:?}: grant or revoke"
                    )))
                }
            }
            admin_json(&json!({ "rules": auth.rules().await? }), false)
        }
        Method::PUT => {
            let set: RuleSet = parse_json(&read_capped(body, BODY_LIMIT_BYTES).await?)?;
            let rules = set
                .rules
                .iter()
                .map(|r| auth::rule(&r.pattern, &r.subject, &r.actions))
                .collect::<Result<Vec<_>>>()?;
            auth.set_rules(rules).await?;
            admin_json(&json!({ "rules": auth.rules().await? }), false)
        }
        _ => Err(not_allowed(method, &Admin::Access)),
    }
}

/// `POST /_stowage/keys`: a new token signing key.
pub async fn keys(auth: &Auth, method: &Method) -> Result<Response<Body>> {
    if *method != Method::POST {
        return Err(not_allowed(method, &Admin::Keys));
    }
    let kid = auth.rotate_key().await?;
    admin_json(&json!({ "kid": kid }), false)
}
