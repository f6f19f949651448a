//! Who may do what, as replicated state: accounts (users with argon2id
//! password hashes, robots with hashed tokens), access rules by repository
//! glob, and the keys registry tokens are signed with. Hashing, token
//! checks and glob matching happen in the node; this module stores the
//! records and keeps the one invariant apply can check: a cluster with
//! accounts always keeps an administrator.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::command::{Outcome, Rejection};
use super::{count, decode, encode, key, Txn};
use crate::error::{Error, Result};
use crate::types::AccountName;

pub(super) const ACCOUNT: u8 = b'A'; // A<name> -> Account
pub(super) const GENERATION: u8 = b'Q'; // Q<name> -> u64 last generation (kept after removal)
pub(super) const RULE: u8 = b'G'; // G<pattern>\0<subject> -> Actions
pub(super) const SIGNING_KEY: u8 = b'J'; // J<kid> -> SigningKey
/// Bumped by every access change, so a node can cache what it compiled.
pub(super) const ACCESS_VERSION: &[u8] = b"_access";

/// The pattern whose `admin` grant makes a cluster administrator.
pub const ADMIN_PATTERN: &str = "**";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountKind {
    User,
    Robot,
}

impl fmt::Display for AccountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccountKind::User => "user",
            AccountKind::Robot => "robot",
        })
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: AccountName,
    pub kind: AccountKind,
    /// An argon2id PHC string (users) or `sha256:<hex>` of the token
    /// (robots): never the secret itself.
    pub secret_hash: String,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    /// Set by apply, one more than any earlier account of this name had,
    /// so tokens issued before a password change or a re-creation fail.
    pub generation: u64,
}

impl Account {
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }
}

// The hash is not a secret, but it has no business in logs either.
impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("expires_ms", &self.expires_ms)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Whom a rule grants to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Subject {
    /// Every caller, signed in or not.
    Anonymous,
    /// Every caller with a valid account.
    Authenticated,
    Account(AccountName),
}

impl Subject {
    pub fn parse(s: &str) -> Result<Subject> {
        Ok(match s {
            "anonymous" => Subject::Anonymous,
            "authenticated" => Subject::Authenticated,
            name => Subject::Account(AccountName::parse(name)?),
        })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Anonymous => f.write_str("anonymous"),
            Subject::Authenticated => f.write_str("authenticated"),
            Subject::Account(n) => f.write_str(n.as_str()),
        }
    }
}

/// A set of the four rights; `admin` includes the other three.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PUSH: Actions = Actions(2);
    pub const DELETE: Actions = Actions(4);
    pub const ADMIN: Actions = Actions(8);
    const NAMES: [(&'static str, Actions); 4] = [
        ("pull", Actions::PULL),
        ("push", Actions::PUSH),
        ("delete", Actions::DELETE),
        ("admin", Actions::ADMIN),
    ];

    /// `pull,push`, `admin`, `*` (everything): the words the CLI, the
    /// rules file and token scopes use.
    pub fn parse(s: &str) -> Result<Actions> {
        let mut out = Actions::NONE;
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "*" {
                out = out.union(Actions::ADMIN);
                continue;
            }
            let (_, a) = Self::NAMES
                .iter()
                .find(|(n, _)| *n == word)
                .ok_or_else(|| {
                    Error::InvalidRule(format!(
                        "unknown action {word:?} (pull, push, delete, admin)"
                    ))
                })?;
            out = out.union(*a);
        }
        Ok(out)
    }

    /// Whether these rights cover every one of `need`.
    pub fn allows(self, need: Actions) -> bool {
        self.0 & Actions::ADMIN.0 != 0 || self.0 & need.0 == need.0
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn minus(self, other: Actions) -> Actions {
        Actions(self.0 & !other.0)
    }

    pub fn intersect(self, other: Actions) -> Actions {
        let admin = |a: Actions| a.0 & Actions::ADMIN.0 != 0;
        if admin(self) && admin(other) {
            return Actions::ADMIN;
        }
        // Admin stands for the other three when it meets a narrower set.
        let spread = |a: Actions| if admin(a) { 7 } else { a.0 & 7 };
        Actions(spread(self) & spread(other))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(_, a)| self.0 & a.0 != 0)
            .map(|(n, _)| *n)
            .collect()
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actions({self})")
    }
}

/// Grants `actions` on the repositories matching `pattern` (a glob: `*`
/// stays within one path component, `**` crosses them) to `subject`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccessRule {
    pub pattern: String,
    pub subject: Subject,
    pub actions: Actions,
}

impl AccessRule {
    /// Checks the pattern's characters (the node compiles it).
    pub fn new(pattern: &str, subject: Subject, actions: Actions) -> Result<AccessRule> {
        let ok = !pattern.is_empty()
            && pattern.len() <= 255
            && pattern.bytes().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'.' | b'_' | b'-' | b'/' | b'*' | b'?')
            });
        if !ok {
            return Err(Error::InvalidRule(format!(
                "pattern {:?}: 1-255 characters of a-z 0-9 . _ - / * ?",
                pattern.chars().take(100).collect::<String>()
            )));
        }
        if actions.is_empty() {
            return Err(Error::InvalidRule(
                "a rule grants at least one action".into(),
            ));
        }
        Ok(AccessRule {
            pattern: pattern.to_owned(),
            subject,
            actions,
        })
    }
}

/// A key registry tokens are signed with (HMAC-SHA256). The newest one
/// without `retired_ms` signs; retired ones still verify until dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    #[serde(with = "serde_bytes")]
    pub secret: Vec<u8>,
    pub created_ms: u64,
    pub retired_ms: Option<u64>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_ms", &self.created_ms)
            .field("retired_ms", &self.retired_ms)
            .finish_non_exhaustive()
    }
}

fn rule_key(pattern: &str, subject: &Subject) -> Vec<u8> {
    key(RULE, &[pattern, &subject.to_string()])
}

fn prefix_scan<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    prefix: u8,
    what: &'static str,
) -> Result<Vec<(Vec<u8>, T)>> {
    tree.scan_prefix([prefix])
        .map(|kv| {
            let (k, v) = kv?;
            Ok((k.to_vec(), decode(what, &v)?))
        })
        .collect()
}

fn parse_rule_key(k: &[u8], actions: Actions) -> Result<AccessRule> {
    let text = std::str::from_utf8(&k[1..])
        .map_err(|_| Error::InvalidRule("stored rule key is not text".into()))?;
    let (pattern, subject) = text
        .split_once('\0')
        .ok_or_else(|| Error::InvalidRule("stored rule key has no subject".into()))?;
    Ok(AccessRule {
        pattern: pattern.to_owned(),
        subject: Subject::parse(subject)?,
        actions,
    })
}

// ---- reads ----

pub(super) fn account(tree: &sled::Tree, name: &AccountName) -> Result<Option<Account>> {
    tree.get(key(ACCOUNT, &[name.as_str()]))?
        .map(|v| decode("accounts", &v))
        .transpose()
}

pub(super) fn accounts(tree: &sled::Tree) -> Result<Vec<Account>> {
    Ok(prefix_scan(tree, ACCOUNT, "accounts")?
        .into_iter()
        .map(|(_, a)| a)
        .collect())
}

pub(super) fn rules(tree: &sled::Tree) -> Result<Vec<AccessRule>> {
    prefix_scan::<Actions>(tree, RULE, "rules")?
        .into_iter()
        .map(|(k, a)| parse_rule_key(&k, a))
        .collect()
}

pub(super) fn signing_keys(tree: &sled::Tree) -> Result<Vec<SigningKey>> {
    let mut keys: Vec<SigningKey> = prefix_scan(tree, SIGNING_KEY, "signing keys")?
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.created_ms));
    Ok(keys)
}

// ---- apply ----

/// Staged views for the admin check, which must see the command's writes.
fn staged_accounts(txn: &Txn<'_>) -> Result<Vec<Account>> {
    let mut out = Vec::new();
    for kv in txn.tree.scan_prefix([ACCOUNT]) {
        let (k, _) = kv?;
        if let Some(v) = txn.get(&k)? {
            out.push(decode("accounts", &v)?);
        }
    }
    for (k, v) in txn.writes.range(vec![ACCOUNT]..vec![ACCOUNT + 1]) {
        if let Some(v) = v {
            if !txn.tree.contains_key(k)? {
                out.push(decode("accounts", v)?);
            }
        }
    }
    Ok(out)
}

fn staged_rules(txn: &Txn<'_>) -> Result<Vec<AccessRule>> {
    let mut keys: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
    for kv in txn.tree.scan_prefix([RULE]) {
        keys.insert(kv?.0.to_vec());
    }
    keys.extend(
        txn.writes
            .range(vec![RULE]..vec![RULE + 1])
            .map(|(k, _)| k.clone()),
    );
    let mut out = Vec::new();
    for k in keys {
        if let Some(v) = txn.get(&k)? {
            out.push(parse_rule_key(&k, decode("rules", &v)?)?);
        }
    }
    Ok(out)
}

/// A cluster with accounts must keep one that administers it: the change
/// that would leave none is refused, so nobody locks the cluster.
fn keeps_an_admin(txn: &Txn<'_>) -> Result<bool> {
    let accounts = staged_accounts(txn)?;
    if accounts.is_empty() {
        return Ok(true);
    }
    let rules = staged_rules(txn)?;
    Ok(rules.iter().any(|r| {
        r.pattern == ADMIN_PATTERN
            && r.actions.allows(Actions::ADMIN)
            && match &r.subject {
                Subject::Anonymous | Subject::Authenticated => true,
                Subject::Account(n) => accounts.iter().any(|a| &a.name == n),
            }
    }))
}

fn bump_version(txn: &mut Txn<'_>) -> Result<()> {
    let v = count(txn.get(ACCESS_VERSION)?.as_deref());
    txn.put(ACCESS_VERSION.to_vec(), (v + 1).to_be_bytes().to_vec());
    Ok(())
}

fn merge_rule(txn: &mut Txn<'_>, rule: &AccessRule) -> Result<()> {
    let k = rule_key(&rule.pattern, &rule.subject);
    let have: Actions = match txn.get(&k)? {
        Some(v) => decode("rules", &v)?,
        None => Actions::NONE,
    };
    txn.put(k, encode(&have.union(rule.actions)));
    Ok(())
}

pub(super) fn put_account(txn: &mut Txn<'_>, account: &Account, replace: bool) -> Result<Outcome> {
    let ak = key(ACCOUNT, &[account.name.as_str()]);
    let existing: Option<Account> = txn.get(&ak)?.map(|v| decode("accounts", &v)).transpose()?;
    match (&existing, replace) {
        (Some(_), false) => return Ok(Outcome::Rejected(Rejection::AccountExists)),
        (None, true) => return Ok(Outcome::Rejected(Rejection::AccountUnknown)),
        (Some(old), true) if old.kind != account.kind => {
            return Ok(Outcome::Rejected(Rejection::AccountUnknown))
        }
        _ => {}
    }
    let first_user = account.kind == AccountKind::User
        && !staged_accounts(txn)?
            .iter()
            .any(|a| a.kind == AccountKind::User);
    let gk = key(GENERATION, &[account.name.as_str()]);
    let generation = count(txn.get(&gk)?.as_deref()) + 1;
    txn.put(gk, generation.to_be_bytes().to_vec());
    let mut stored = account.clone();
    stored.generation = generation;
    if let Some(old) = existing {
        // A password change keeps when the account was made.
        stored.created_ms = old.created_ms;
    }
    txn.put(ak, encode(&stored));
    if first_user && !keeps_an_admin(txn)? {
        // The first user administers the cluster; otherwise the first
        // account would switch access control on with nobody able to
        // change it.
        merge_rule(
            txn,
            &AccessRule {
                pattern: ADMIN_PATTERN.into(),
                subject: Subject::Account(account.name.clone()),
                actions: Actions::ADMIN,
            },
        )?;
    }
    if !keeps_an_admin(txn)? {
        return Ok(Outcome::Rejected(Rejection::LastAdmin));
    }
    bump_version(txn)?;
    Ok(Outcome::Done)
}

pub(super) fn remove_account(txn: &mut Txn<'_>, name: &AccountName) -> Result<Outcome> {
    let ak = key(ACCOUNT, &[name.as_str()]);
    if !txn.has(&ak)? {
        return Ok(Outcome::Rejected(Rejection::AccountUnknown));
    }
    txn.del(ak);
    let subject = Subject::Account(name.clone());
    for r in staged_rules(txn)? {
        if r.subject == subject {
            txn.del(rule_key(&r.pattern, &r.subject));
        }
    }
    if !keeps_an_admin(txn)? {
        return Ok(Outcome::Rejected(Rejection::LastAdmin));
    }
    bump_version(txn)?;
    Ok(Outcome::Done)
}

pub(super) fn grant(txn: &mut Txn<'_>, rule: &AccessRule) -> Result<Outcome> {
    if let Subject::Account(n) = &rule.subject {
        if !txn.has(&key(ACCOUNT, &[n.as_str()]))? {
            return Ok(Outcome::Rejected(Rejection::AccountUnknown));
        }
    }
    merge_rule(txn, rule)?;
    bump_version(txn)?;
    Ok(Outcome::Done)
}

pub(super) fn revoke(txn: &mut Txn<'_>, rule: &AccessRule) -> Result<Outcome> {
    let k = rule_key(&rule.pattern, &rule.subject);
    let have: Actions = match txn.get(&k)? {
        Some(v) => decode("rules", &v)?,
        None => return Ok(Outcome::Rejected(Rejection::RuleUnknown)),
    };
    let left = have.minus(rule.actions);
    if left.is_empty() {
        txn.del(k);
    } else {
        txn.put(k, encode(&left));
    }
    if !keeps_an_admin(txn)? {
        return Ok(Outcome::Rejected(Rejection::LastAdmin));
    }
    bump_version(txn)?;
    Ok(Outcome::Done)
}

pub(super) fn set_rules(txn: &mut Txn<'_>, rules: &[AccessRule]) -> Result<Outcome> {
    for r in staged_rules(txn)? {
        txn.del(rule_key(&r.pattern, &r.subject));
    }
    for r in rules {
        if let Subject::Account(n) = &r.subject {
            if !txn.has(&key(ACCOUNT, &[n.as_str()]))? {
                return Ok(Outcome::Rejected(Rejection::AccountUnknown));
            }
        }
        merge_rule(txn, r)?;
    }
    if !keeps_an_admin(txn)? {
        return Ok(Outcome::Rejected(Rejection::LastAdmin));
    }
    bump_version(txn)?;
    Ok(Outcome::Done)
}

pub(super) fn add_signing_key(
    txn: &mut Txn<'_>,
    new: &SigningKey,
    drop_retired_before_ms: u64,
) -> Result<Outcome> {
    let mut keys: Vec<(Vec<u8>, SigningKey)> = Vec::new();
    for kv in txn.tree.scan_prefix([SIGNING_KEY]) {
        let (k, v) = kv?;
        keys.push((k.to_vec(), decode("signing keys", &v)?));
    }
    for (k, mut old) in keys {
        match old.retired_ms {
            Some(at) if at < drop_retired_before_ms => txn.del(k),
            Some(_) => {}
            None => {
                old.retired_ms = Some(new.created_ms);
                txn.put(k, encode(&old));
            }
        }
    }
    let mut stored = new.clone();
    stored.retired_ms = None;
    txn.put(key(SIGNING_KEY, &[new.kid.as_str()]), encode(&stored));
    bump_version(txn)?;
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_and_admin_covers_all() {
        let pp = Actions::parse("pull, push").unwrap();
        assert!(pp.allows(Actions::PULL) && pp.allows(Actions::PUSH));
        assert!(!pp.allows(Actions::DELETE));
        assert!(Actions::ADMIN.allows(Actions::DELETE.union(Actions::PULL)));
        assert_eq!(Actions::parse("*").unwrap(), Actions::ADMIN);
        assert!(Actions::parse("fly").is_err());
        assert_eq!(pp.to_string(), "pull,push");
        assert_eq!(Actions::ADMIN.intersect(pp), pp);
        assert_eq!(pp.intersect(Actions::PULL), Actions::PULL);
        assert_eq!(Actions::ADMIN.intersect(Actions::ADMIN), Actions::ADMIN);
    }

    #[test]
    fn patterns_validate() {
        let s = Subject::Anonymous;
        assert!(AccessRule::new("team-a/**", s.clone(), Actions::PULL).is_ok());
        assert!(AccessRule::new("", s.clone(), Actions::PULL).is_err());
        assert!(AccessRule::new("A/b", s.clone(), Actions::PULL).is_err());
        assert!(AccessRule::new("a", s, Actions::NONE).is_err());
    }
}
