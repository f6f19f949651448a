//! Replication rules as replicated state: where to push (another registry),
//! what (a repository glob, a tag pattern), whether deletes follow, and the
//! cursor: the last log index whose changes reached the target, advanced
//! through the log so it survives a restart of every node.

use serde::{Deserialize, Serialize};

use super::command::{Outcome, Rejection};
use super::{count, decode, encode, key, Txn};
use crate::error::{Error, Result};

pub(super) const RULE: u8 = b'Y'; // Y<name> -> ReplicationRule
const CURSOR: u8 = b'V'; // V<name> -> u64 last log index replicated

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationRule {
    pub name: String,
    /// The target registry's base URL (`https://host:port`).
    pub target: String,
    /// Repositories to push (a glob: `*` within a component, `**` across).
    pub repositories: String,
    /// Tags to push (a regular expression, whole-tag match); `None`: all.
    pub tags: Option<String>,
    /// Put before each repository name on the target (e.g. `mirror/`).
    pub prefix: String,
    /// Whether tag and manifest deletes follow.
    pub deletes: bool,
    /// The target's account, if it needs one (a replicated secret: the
    /// admin API shows it masked).
    pub username: Option<String>,
    pub password: Option<String>,
}

/// A repository name prefix: empty, or a repository name and a `/`.
fn check_prefix(what: &str, prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let ok = prefix
        .strip_suffix('/')
        .is_some_and(|p| crate::types::RepoName::parse(p).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRule(format!(
            "{what} {prefix:?}: a repository path ending in /, such as mirror/"
        )))
    }
}

impl ReplicationRule {
    pub fn check(&self) -> Result<()> {
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok_name {
            return Err(Error::InvalidRule(
                "a replication rule's name: 1-64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let host = self
            .target
            .strip_prefix("http://")
            .or_else(|| self.target.strip_prefix("https://"));
        match host {
            // Credentials go in their own fields, never in the URL (it is
            // shown in status and logs).
            Some(h) if !h.is_empty() && !h.split('/').next().unwrap_or("").contains('@') => {}
            _ => {
                return Err(Error::InvalidRule(
                    "target: an http:// or https:// registry URL without user:password@".into(),
                ))
            }
        }
        check_prefix("prefix", &self.prefix)?;
        if self.repositories.is_empty() || self.repositories.contains('\0') {
            return Err(Error::InvalidRule(
                "repositories: a glob such as team/**".into(),
            ));
        }
        Ok(())
    }

    /// The rule as the admin API shows it: the password masked.
    pub fn masked(&self) -> ReplicationRule {
        ReplicationRule {
            password: self.password.as_ref().map(|_| "********".into()),
            ..self.clone()
        }
    }
}

pub(super) fn put(txn: &mut Txn<'_>, rule: &ReplicationRule, cursor: u64) -> Result<Outcome> {
    if rule.check().is_err() {
        return Ok(Outcome::Rejected(Rejection::Malformed));
    }
    txn.put(key(RULE, &[&rule.name]), encode(rule));
    txn.put(key(CURSOR, &[&rule.name]), cursor.to_be_bytes().to_vec());
    Ok(Outcome::Done)
}

pub(super) fn remove(txn: &mut Txn<'_>, name: &str) -> Result<Outcome> {
    let k = key(RULE, &[name]);
    if !txn.has(&k)? {
        return Ok(Outcome::Rejected(Rejection::RuleUnknown));
    }
    txn.del(k);
    txn.del(key(CURSOR, &[name]));
    Ok(Outcome::Done)
}

/// Moves a rule's cursor; never backwards unless `reset` (a resync), and
/// only from where the copying step started (`from`).
pub(super) fn advance(
    txn: &mut Txn<'_>,
    name: &str,
    index: u64,
    reset: bool,
    from: Option<u64>,
) -> Result<Outcome> {
    if !txn.has(&key(RULE, &[name]))? {
        return Ok(Outcome::Rejected(Rejection::RuleUnknown));
    }
    let ck = key(CURSOR, &[name]);
    let now = count(txn.get(&ck)?.as_deref());
    if from.is_some_and(|f| f != now) && !reset {
        return Ok(Outcome::Rejected(Rejection::Malformed));
    }
    if reset || index > now {
        txn.put(ck, index.to_be_bytes().to_vec());
    }
    Ok(Outcome::Done)
}

/// Every rule with its cursor.
pub(super) fn all(tree: &sled::Tree) -> Result<Vec<(ReplicationRule, u64)>> {
    tree.scan_prefix([RULE])
        .map(|kv| {
            let (_, v) = kv?;
            let rule: ReplicationRule = decode("replication rules", &v)?;
            let cursor = count(tree.get(key(CURSOR, &[&rule.name]))?.as_deref());
            Ok((rule, cursor))
        })
        .collect()
}

pub(super) const MIRROR: u8 = b'S'; // S<name> -> MirrorRule

/// Pull mode: repositories under `prefix` here mirror those under
/// `upstream_prefix` of `upstream`. A pull of something missing fetches it
/// from the upstream and stores it as ordinary replicated content; every
/// `interval_secs` the leader refreshes the tags already mirrored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorRule {
    pub name: String,
    pub upstream: String,
    /// Local repository name prefix, e.g. `hub/` (`hub/library/alpine`).
    pub prefix: String,
    /// Put in its place upstream, e.g. `` or `library/`.
    pub upstream_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// 0: refresh only on demand.
    pub interval_secs: u64,
}

impl MirrorRule {
    pub fn check(&self) -> Result<()> {
        let as_replication = ReplicationRule {
            name: self.name.clone(),
            target: self.upstream.clone(),
            repositories: "**".into(),
            tags: None,
            prefix: String::new(),
            deletes: false,
            username: None,
            password: None,
        };
        as_replication.check()?;
        if self.prefix.is_empty() {
            return Err(Error::InvalidRule(
                "a mirror's prefix is a repository path ending in /, e.g. hub/".into(),
            ));
        }
        check_prefix("prefix", &self.prefix)?;
        check_prefix("upstream prefix", &self.upstream_prefix)?;
        if self.interval_secs > 365 * 24 * 3600 {
            return Err(Error::InvalidRule("interval_secs: at most a year".into()));
        }
        Ok(())
    }

    /// The upstream repository a local one mirrors, if it is under the
    /// prefix.
    pub fn upstream_repo(&self, local: &str) -> Option<String> {
        local
            .strip_prefix(&self.prefix)
            .filter(|rest| !rest.is_empty())
            .map(|rest| format!("{}{rest}", self.upstream_prefix))
    }

    pub fn masked(&self) -> MirrorRule {
        MirrorRule {
            password: self.password.as_ref().map(|_| "********".into()),
            ..self.clone()
        }
    }
}

pub(super) fn put_mirror(txn: &mut Txn<'_>, rule: &MirrorRule) -> Result<Outcome> {
    if rule.check().is_err() {
        return Ok(Outcome::Rejected(Rejection::Malformed));
    }
    txn.put(key(MIRROR, &[&rule.name]), encode(rule));
    Ok(Outcome::Done)
}

pub(super) fn remove_mirror(txn: &mut Txn<'_>, name: &str) -> Result<Outcome> {
    let k = key(MIRROR, &[name]);
    if !txn.has(&k)? {
        return Ok(Outcome::Rejected(Rejection::RuleUnknown));
    }
    txn.del(k);
    Ok(Outcome::Done)
}

pub(super) fn mirrors(tree: &sled::Tree) -> Result<Vec<MirrorRule>> {
    tree.scan_prefix([MIRROR])
        .map(|kv| decode("mirror rules", &kv?.1))
        .collect()
}
