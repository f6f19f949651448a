//! Authentication and authorization at the HTTP edge: who the caller is
//! (HTTP Basic or a bearer token from the token endpoint) and whether the
//! access rules let them do what the endpoint does. It runs once per
//! request, before any handler; handlers get a checked `Caller`. Accounts,
//! rules and signing keys are replicated state, read from the state
//! machine and changed only through `Command`s, so every node decides the
//! same the moment a change commits.
//!
//! Layout: `identity.rs` (secrets, the login cache and rate limit),
//! `token.rs` (JWTs and scopes), `policy.rs` (rules compiled for
//! matching), this file (the checks, the token endpoint's logic, account
//! and rule changes).

pub mod identity;
pub mod policy;
pub mod token;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http::HeaderMap;
use serde::Serialize;
use stowage_storage::meta::access::{
    AccessRule, Account, AccountKind, Actions, SigningKey, Subject,
};
use stowage_storage::meta::{Command, Outcome, Rejection};
use stowage_storage::types::{AccountName, RepoName};
use stowage_storage::Store;

use self::identity::Verifier;
use self::policy::{Policy, Who};
use self::token::{ResourceAccess, TokenUse};
use crate::consensus::Consensus;
use crate::error::{Error, Result};
use crate::registry::now_ms;

/// Settings of authentication, with their units.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The `service` of challenges and the audience of tokens.
    pub service: String,
    pub token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Failed logins one address may make per minute.
    pub max_failed_logins_per_minute: u32,
    /// Set when a bootstrap admin is configured: access control is on from
    /// the first request, before that account has committed.
    pub enforce_from_start: bool,
    /// The token endpoint clients are sent to; derived from the request's
    /// `Host` when unset.
    pub realm: Option<String>,
    /// The registry port speaks HTTPS, so a realm derived from `Host` says
    /// `https://` (clients refuse to send credentials to a downgraded one).
    pub tls: bool,
}

/// Who made a request, once checked.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No account exists: access control is off and everyone may do
    /// everything (a fresh local registry).
    Open,
    /// `token`: the access an anonymous bearer token carries, if one came.
    Anonymous { token: Option<Vec<ResourceAccess>> },
    /// `token`: the access of the bearer token used; `None` for Basic.
    Account {
        name: AccountName,
        kind: AccountKind,
        token: Option<Vec<ResourceAccess>>,
    },
}

impl Caller {
    fn who(&self) -> Who<'_> {
        match self {
            Caller::Account { name, .. } => Who::Account(name),
            _ => Who::Anonymous,
        }
    }

    /// The account name, for logs and the token's subject.
    pub fn name(&self) -> Option<&AccountName> {
        match self {
            Caller::Account { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// What an endpoint requires.
#[derive(Debug, Clone)]
pub enum Need {
    Nothing,
    /// `/v2/`: some credential, an anonymous token included, so clients
    /// learn where to get one.
    Credential,
    Repo {
        repo: RepoName,
        actions: Actions,
    },
    Admin,
}

/// Where a 401 sends the client, from the request.
pub struct Challenge {
    pub realm: String,
    pub service: String,
}

impl Challenge {
    fn bearer(&self, scope: Option<&str>, insufficient: bool) -> String {
        let mut c = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm, self.service
        );
        if let Some(s) = scope {
            c.push_str(&format!(",scope=\"{s}\""));
        }
        if insufficient {
            c.push_str(",error=\"insufficient_scope\"");
        }
        c
    }
}

/// The token endpoint's answer (Docker token and OAuth2 fields both).
#[derive(Debug, Serialize)]
pub struct TokenAnswer {
    pub token: String,
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// An account as the admin API lists it: never its hash.
#[derive(Debug, Serialize)]
pub struct AccountView {
    pub name: String,
    pub kind: AccountKind,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct RuleView {
    pub pattern: String,
    pub subject: String,
    pub actions: Vec<&'static str>,
}

impl From<&AccessRule> for RuleView {
    fn from(r: &AccessRule) -> Self {
        RuleView {
            pattern: r.pattern.clone(),
            subject: r.subject.to_string(),
            actions: r.actions.names(),
        }
    }
}

pub struct Auth {
    store: Arc<Store>,
    consensus: Arc<Consensus>,
    pub settings: AuthSettings,
    verifier: Arc<Verifier>,
    view: Mutex<Option<(u64, Arc<View>)>>,
}

/// What every request consults, read once per access version: the
/// compiled rules, the signing keys, and whether access control is on.
struct View {
    policy: Policy,
    keys: Vec<SigningKey>,
    has_accounts: bool,
    accounts: std::collections::HashMap<AccountName, Account>,
    /// Tokens already verified under these keys (the claims, by token).
    verified: Mutex<std::collections::HashMap<String, token::Claims>>,
}

/// Verified tokens kept per view; a view lives until the next access change.
const VERIFIED_TOKENS: usize = 10_000;

fn rejection(r: Rejection) -> Error {
    Error::AccessChange(match r {
        Rejection::AccountExists => "the account exists already".into(),
        Rejection::AccountUnknown => "no such account (of that kind)".into(),
        Rejection::RuleUnknown => "no such rule".into(),
        Rejection::LastAdmin => {
            "refused: the cluster would be left with no account that has admin on **".into()
        }
        other => format!("refused: {other:?}"),
    })
}

impl Auth {
    pub fn new(store: Arc<Store>, consensus: Arc<Consensus>, settings: AuthSettings) -> Arc<Auth> {
        Arc::new(Auth {
            store,
            consensus,
            settings,
            verifier: Arc::new(Verifier::default()),
            view: Mutex::new(None),
        })
    }

    /// Whether requests are checked at all.
    pub fn enforced(&self) -> Result<bool> {
        Ok(self.settings.enforce_from_start || self.view()?.has_accounts)
    }

    /// The current view, rebuilt only when an access command was applied
    /// since (every one bumps the version).
    fn view(&self) -> Result<Arc<View>> {
        let version = self.store.meta.access_version()?;
        let mut cached = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, view)) = cached.as_ref() {
            if *v == version {
                return Ok(view.clone());
            }
        }
        let accounts: std::collections::HashMap<AccountName, Account> = self
            .store
            .meta
            .accounts()?
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect();
        let view = Arc::new(View {
            policy: Policy::new(self.store.meta.access_rules()?),
            keys: self.store.meta.signing_keys()?,
            has_accounts: !accounts.is_empty(),
            accounts,
            verified: Mutex::default(),
        });
        *cached = Some((version, view.clone()));
        Ok(view)
    }

    pub fn challenge(&self, headers: &HeaderMap, authority: Option<&str>) -> Challenge {
        let realm = self.settings.realm.clone().unwrap_or_else(|| {
            let host = headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or(authority)
                .unwrap_or("localhost");
            let scheme = if self.settings.tls { "https" } else { "http" };
            format!("{scheme}://{host}/token")
        });
        Challenge {
            realm,
            service: self.settings.service.clone(),
        }
    }

    /// An account by name, waiting for the read barrier if this node has
    /// not seen it yet (it may have been created through another node a
    /// moment ago).
    async fn account(&self, name: &AccountName) -> Result<Option<Account>> {
        if let Some(a) = self.store.meta.account(name)? {
            return Ok(Some(a));
        }
        self.consensus.read_barrier().await?;
        Ok(self.store.meta.account(name)?)
    }

    /// Checks a name and secret (a password or a robot token).
    async fn login(&self, name: &str, secret: &str, peer: Option<IpAddr>) -> Result<Account> {
        self.verifier
            .check_rate(peer, self.settings.max_failed_logins_per_minute)?;
        let fail = |why: &str| {
            self.verifier.record_failure(peer);
            // Debug-formatted: a name from a Basic header may hold control
            // characters meant for an operator's terminal.
            tracing::warn!(user = ?name.chars().take(64).collect::<String>(), peer = ?peer, reason = why, "failed login");
            Error::Unauthorized {
                reason: "invalid username or password".into(),
                challenge: String::new(),
            }
        };
        let Ok(account_name) = AccountName::parse(name) else {
            return Err(fail("no such account"));
        };
        let Some(account) = self.account(&account_name).await? else {
            return Err(fail("no such account"));
        };
        if account.expired(now_ms()) {
            return Err(fail("account expired"));
        }
        let secret = secret.to_owned();
        let hash_account = account.clone();
        let verifier = self.verifier.clone();
        // argon2 takes tens of milliseconds: off the async threads.
        let verified =
            tokio::task::spawn_blocking(move || verifier.verify(&hash_account, &secret)).await?;
        if !verified {
            return Err(fail("wrong secret"));
        }
        Ok(account)
    }

    /// Who sent `headers`. A bad credential is a 401 even where anonymous
    /// access would do: a client that sent one expects it to count.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        challenge: &Challenge,
    ) -> Result<Caller> {
        if !self.enforced()? {
            return Ok(Caller::Open);
        }
        let unauthorized = |reason: &str| Error::Unauthorized {
            reason: reason.into(),
            challenge: challenge.bearer(None, false),
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous { token: None });
        };
        let value = value
            .to_str()
            .map_err(|_| unauthorized("malformed Authorization header"))?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, secret) =
                decode_basic(rest).ok_or_else(|| unauthorized("malformed Basic credentials"))?;
            let account = self
                .login(&user, &secret, peer)
                .await
                .map_err(|e| with_challenge(e, challenge))?;
            return Ok(Caller::Account {
                name: account.name,
                kind: account.kind,
                token: None,
            });
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            let claims = match self.verify_token(rest) {
                Ok(c) => c,
                // Signed by a key this node has not applied yet (the first
                // key, or one rotated in through another node a moment
                // ago): wait for the read barrier once, then decide.
                Err(_) if self.names_unknown_key(rest) => {
                    self.consensus.read_barrier().await?;
                    self.verify_token(rest).map_err(|why| unauthorized(&why))?
                }
                Err(why) => return Err(unauthorized(&why)),
            };
            if claims.token_use != TokenUse::Access {
                return Err(unauthorized("a refresh token is not an access token"));
            }
            return self
                .caller_of(&claims)
                .await
                .map_err(|e| with_challenge(e, challenge));
        }
        Err(unauthorized("unsupported Authorization scheme"))
    }

    /// Whether a well-formed token names a signing key this node lacks.
    fn names_unknown_key(&self, t: &str) -> bool {
        let Ok(view) = self.view() else {
            return false;
        };
        token::key_id(t).is_some_and(|kid| !view.keys.iter().any(|k| k.kid == kid))
    }

    /// A token's claims: checked once (signature, audience, expiry), then
    /// remembered until it expires or the access state changes.
    fn verify_token(&self, t: &str) -> std::result::Result<token::Claims, String> {
        let view = self.view().map_err(|e| e.to_string())?;
        let now = now_ms() / 1000;
        {
            let verified = view.verified.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = verified.get(t) {
                if c.exp > now {
                    return Ok(c.clone());
                }
            }
        }
        let claims = token::verify(t, &view.keys, &self.settings.service)?;
        let mut verified = view.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_TOKENS {
            verified.retain(|_, c| c.exp > now);
            if verified.len() >= VERIFIED_TOKENS {
                verified.clear();
            }
        }
        verified.insert(t.to_owned(), claims.clone());
        Ok(claims)
    }

    /// The caller a verified token speaks for, if its account still exists
    /// as it was when the token was issued.
    async fn caller_of(&self, claims: &token::Claims) -> Result<Caller> {
        if claims.sub.is_empty() {
            return Ok(Caller::Anonymous {
                token: Some(claims.access.clone()),
            });
        }
        let gone = || Error::Unauthorized {
            reason: "the token's account was removed or changed".into(),
            challenge: String::new(),
        };
        let name = AccountName::parse(&claims.sub).map_err(|_| gone())?;
        let mut view = self.view()?;
        let behind = |view: &View| {
            view.accounts
                .get(&name)
                .is_none_or(|a| a.generation < claims.gen)
        };
        if behind(&view) {
            // Issued by a node that knows the account (or its newest
            // generation) already; this one may not have applied it yet.
            self.consensus.read_barrier().await?;
            view = self.view()?;
        }
        let account = view.accounts.get(&name).cloned().ok_or_else(gone)?;
        if account.generation != claims.gen || account.expired(now_ms()) {
            return Err(gone());
        }
        Ok(Caller::Account {
            name: account.name,
            kind: account.kind,
            token: match claims.token_use {
                TokenUse::Access => Some(claims.access.clone()),
                TokenUse::Refresh => None,
            },
        })
    }

    /// Whether the caller may do what `need` says; the error is the 401
    /// (log in, or get a token with that scope) or 403 (the rules say no).
    pub fn authorize(&self, caller: &Caller, need: &Need, challenge: &Challenge) -> Result<()> {
        if matches!(caller, Caller::Open) {
            return Ok(());
        }
        match need {
            Need::Nothing => Ok(()),
            Need::Credential => match caller {
                Caller::Anonymous { token: None } => Err(Error::Unauthorized {
                    reason: "authentication required".into(),
                    challenge: challenge.bearer(None, false),
                }),
                _ => Ok(()),
            },
            Need::Admin => {
                let view = self.view()?;
                match caller {
                    Caller::Account { .. } if view.policy.is_admin(caller.who()) => Ok(()),
                    Caller::Account { name, .. } => Err(Error::Denied(format!(
                        "{name} is not a cluster administrator"
                    ))),
                    _ => Err(Error::Unauthorized {
                        reason: "the admin API needs an administrator's credentials".into(),
                        challenge: "Basic realm=\"stowage\"".into(),
                    }),
                }
            }
            Need::Repo { repo, actions } => {
                let scope = format!("repository:{repo}:{}", scope_words(*actions));
                let rights = self.view()?.policy.rights(caller.who(), repo.as_str());
                if !rights.allows(*actions) {
                    return match caller {
                        Caller::Account { name, .. } => Err(Error::Denied(format!(
                            "{name} may not {} {repo}",
                            scope_words(*actions).replace(',', "/")
                        ))),
                        _ => Err(Error::Unauthorized {
                            reason: format!(
                                "authentication required to {} {repo}",
                                scope_words(*actions)
                            ),
                            challenge: challenge.bearer(Some(&scope), false),
                        }),
                    };
                }
                let token = match caller {
                    Caller::Anonymous { token } | Caller::Account { token, .. } => token,
                    Caller::Open => &None,
                };
                if let Some(access) = token {
                    let granted = access
                        .iter()
                        .filter(|a| a.kind == "repository" && a.name == repo.as_str())
                        .fold(Actions::NONE, |acc, a| acc.union(a.actions()));
                    if !granted.allows(*actions) {
                        return Err(Error::Unauthorized {
                            reason: format!("the token does not grant {scope}"),
                            challenge: challenge.bearer(Some(&scope), true),
                        });
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether the caller may pull `repo` (catalog filtering).
    pub fn may_pull(&self, caller: &Caller, repo: &str) -> Result<bool> {
        if matches!(caller, Caller::Open) {
            return Ok(true);
        }
        Ok(self
            .view()?
            .policy
            .rights(caller.who(), repo)
            .allows(Actions::PULL))
    }

    // ---- the token endpoint ----

    /// Issues a token for `scopes`, granting what the caller may do of
    /// what was asked. `credentials`: name and secret (Basic, or the
    /// OAuth2 password grant); `refresh`: an OAuth2 refresh token; neither:
    /// an anonymous token.
    pub async fn issue(
        &self,
        credentials: Option<(&str, &str)>,
        refresh: Option<&str>,
        scopes: &[String],
        offline: bool,
        peer: Option<IpAddr>,
        challenge: &Challenge,
    ) -> Result<TokenAnswer> {
        let caller = if let Some((user, secret)) = credentials {
            let a = self
                .login(user, secret, peer)
                .await
                .map_err(|e| with_challenge(e, challenge))?;
            Caller::Account {
                name: a.name,
                kind: a.kind,
                token: None,
            }
        } else if let Some(r) = refresh {
            let bad = |why: String| Error::Unauthorized {
                reason: why,
                challenge: challenge.bearer(None, false),
            };
            let claims = self.verify_token(r).map_err(bad)?;
            if claims.token_use != TokenUse::Refresh || claims.sub.is_empty() {
                return Err(bad("not a refresh token".into()));
            }
            self.caller_of(&claims)
                .await
                .map_err(|e| with_challenge(e, challenge))?
        } else if self.enforced()? {
            Caller::Anonymous { token: None }
        } else {
            Caller::Open
        };
        let view = self.view()?;
        let policy = &view.policy;
        let mut access = Vec::new();
        for s in scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter(|s| !s.is_empty())
        {
            let Some((kind, name, wanted)) = token::parse_scope(s) else {
                continue;
            };
            let granted = match (kind.as_str(), &caller) {
                ("repository", Caller::Open) => wanted,
                ("repository", c) => wanted.intersect(policy.rights(c.who(), &name)),
                // The catalog is filtered per repository; any caller may ask.
                ("registry", _) if name == "catalog" => Actions::ADMIN,
                _ => Actions::NONE,
            };
            if granted.is_empty() {
                continue;
            }
            let words = if kind == "registry" {
                vec!["*".to_owned()]
            } else {
                scope_words(granted).split(',').map(str::to_owned).collect()
            };
            access.push(ResourceAccess {
                kind,
                name,
                actions: words,
            });
        }
        let (sub, kind, gen) = match &caller {
            Caller::Account { name, kind, .. } => {
                let gen = self.store.meta.account(name)?.map_or(0, |a| a.generation);
                (name.as_str().to_owned(), Some(*kind), gen)
            }
            _ => (String::new(), None, 0),
        };
        let key = self.signing_key().await?;
        let now = now_ms() / 1000;
        let ttl = self.settings.token_ttl.as_secs().max(1);
        let scope = access
            .iter()
            .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
            .collect::<Vec<_>>()
            .join(" ");
        let claims = token::claims(
            &sub,
            kind,
            gen,
            &self.settings.service,
            TokenUse::Access,
            now,
            ttl,
            access,
        )?;
        let jwt = token::sign(&claims, &key)?;
        let refresh_token = if offline && !sub.is_empty() {
            let c = token::claims(
                &sub,
                kind,
                gen,
                &self.settings.service,
                TokenUse::Refresh,
                now,
                self.settings.refresh_token_ttl.as_secs().max(1),
                vec![],
            )?;
            Some(token::sign(&c, &key)?)
        } else {
            None
        };
        Ok(TokenAnswer {
            token: jwt.clone(),
            access_token: jwt,
            token_type: "Bearer",
            expires_in: ttl,
            issued_at: rfc3339(now),
            refresh_token,
            scope,
        })
    }

    /// The key new tokens are signed with, made on first need.
    async fn signing_key(&self) -> Result<SigningKey> {
        let current = |view: Arc<View>| view.keys.iter().find(|k| k.retired_ms.is_none()).cloned();
        if let Some(k) = current(self.view()?) {
            return Ok(k);
        }
        self.rotate_key().await?;
        current(self.view()?).ok_or_else(|| Error::Unavailable("no token signing key yet".into()))
    }

    /// A new signing key; the previous one keeps verifying until every
    /// token it signed (refresh tokens included) has expired.
    pub async fn rotate_key(&self) -> Result<String> {
        let now = now_ms();
        let kid = hex::encode(identity::random_bytes::<8>()?);
        let keep_ms = u64::try_from(
            self.settings
                .refresh_token_ttl
                .max(self.settings.token_ttl)
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let cmd = Command::AddSigningKey {
            key: SigningKey {
                kid: kid.clone(),
                secret: identity::random_bytes::<32>()?.to_vec(),
                created_ms: now,
                retired_ms: None,
            },
            drop_retired_before_ms: now.saturating_sub(keep_ms),
        };
        self.propose(cmd).await?;
        Ok(kid)
    }

    async fn propose(&self, cmd: Command) -> Result<()> {
        match self.consensus.propose(cmd).await? {
            Outcome::Done => Ok(()),
            Outcome::Rejected(r) => Err(rejection(r)),
        }
    }

    // ---- accounts and rules (the admin API) ----

    pub async fn add_user(
        &self,
        name: &AccountName,
        password: &str,
        expires_ms: Option<u64>,
    ) -> Result<()> {
        let hash = hash_off_thread(password).await?;
        self.put_account(name, AccountKind::User, hash, expires_ms, false)
            .await
    }

    pub async fn set_password(&self, name: &AccountName, password: &str) -> Result<()> {
        let hash = hash_off_thread(password).await?;
        let expires = self.store.meta.account(name)?.and_then(|a| a.expires_ms);
        self.put_account(name, AccountKind::User, hash, expires, true)
            .await
    }

    /// A new robot account; the token is returned once and only its hash
    /// is kept.
    pub async fn add_robot(&self, name: &AccountName, expires_ms: Option<u64>) -> Result<String> {
        let (token, hash) = identity::new_robot_token()?;
        self.put_account(name, AccountKind::Robot, hash, expires_ms, false)
            .await?;
        Ok(token)
    }

    async fn put_account(
        &self,
        name: &AccountName,
        kind: AccountKind,
        secret_hash: String,
        expires_ms: Option<u64>,
        replace: bool,
    ) -> Result<()> {
        self.propose(Command::PutAccount {
            account: Account {
                name: name.clone(),
                kind,
                secret_hash,
                created_ms: now_ms(),
                expires_ms,
                generation: 0,
            },
            replace,
        })
        .await
    }

    pub async fn remove_account(&self, name: &AccountName) -> Result<()> {
        self.propose(Command::RemoveAccount { name: name.clone() })
            .await
    }

    pub async fn accounts(&self) -> Result<Vec<AccountView>> {
        self.consensus.read_barrier().await?;
        Ok(self
            .store
            .meta
            .accounts()?
            .into_iter()
            .map(|a| AccountView {
                name: a.name.to_string(),
                kind: a.kind,
                created_ms: a.created_ms,
                expires_ms: a.expires_ms,
            })
            .collect())
    }

    pub async fn rules(&self) -> Result<Vec<RuleView>> {
        self.consensus.read_barrier().await?;
        Ok(self
            .store
            .meta
            .access_rules()?
            .iter()
            .map(RuleView::from)
            .collect())
    }

    pub async fn grant(&self, rule: AccessRule) -> Result<()> {
        policy::compile(&rule.pattern)?;
        self.propose(Command::Grant { rule }).await
    }

    pub async fn revoke(&self, rule: AccessRule) -> Result<()> {
        self.propose(Command::Revoke { rule }).await
    }

    pub async fn set_rules(&self, rules: Vec<AccessRule>) -> Result<()> {
        for r in &rules {
            policy::compile(&r.pattern)?;
        }
        self.propose(Command::SetRules { rules }).await
    }

    /// Creates user `admin` from `password_file` once the cluster is
    /// ready, unless an account exists by then.
    pub async fn bootstrap_admin(self: Arc<Self>, password: String) {
        loop {
            if self.consensus.readiness().await.is_ok() {
                match self.store.meta.has_accounts() {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "reading accounts"),
                }
                let Ok(admin) = AccountName::parse("admin") else {
                    return;
                };
                match self.add_user(&admin, &password, None).await {
                    Ok(()) => {
                        tracing::info!("created user admin from admin_password_file");
                        return;
                    }
                    Err(Error::AccessChange(_)) => return,
                    Err(e) => tracing::debug!(error = %e, "bootstrap admin not created yet"),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The user and secret of Basic credentials (what follows `Basic `).
pub fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, secret) = text.split_once(':')?;
    Some((user.to_owned(), secret.to_owned()))
}

/// Parses a rule from the three words the CLI and API take.
pub fn rule(pattern: &str, subject: &str, actions: &str) -> Result<AccessRule> {
    let subject = Subject::parse(subject).map_err(|e| Error::AdminRequest(e.to_string()))?;
    let actions = Actions::parse(actions).map_err(|e| Error::AdminRequest(e.to_string()))?;
    AccessRule::new(pattern, subject, actions).map_err(|e| Error::AdminRequest(e.to_string()))
}

async fn hash_off_thread(password: &str) -> Result<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || identity::hash_password(&password)).await?
}

fn with_challenge(e: Error, challenge: &Challenge) -> Error {
    match e {
        Error::Unauthorized {
            reason,
            challenge: c,
        } if c.is_empty() => Error::Unauthorized {
            reason,
            challenge: challenge.bearer(None, false),
        },
        other => other,
    }
}

/// Scope words: `pull`, `pull,push`, `delete`; admin is `*`.
fn scope_words(a: Actions) -> String {
    if a.allows(Actions::ADMIN) && a.names().contains(&"admin") {
        return "*".into();
    }
    a.to_string()
}

fn rfc3339(secs: u64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm),
    // to keep a date library out for one field.
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_136_771), "2026-12-01T14:52:51Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
