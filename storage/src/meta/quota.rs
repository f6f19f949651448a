//! Quotas as replicated state: per namespace (a repository name prefix:
//! `team-a` covers `team-a` and `team-a/**`), the bytes of distinct blobs
//! linked into its repositories (a blob counts once per namespace however
//! many of its repositories hold it) and the number of its repositories.
//! Usage is kept beside the data and checked in apply, so two pushes that
//! race for the last byte through different nodes cannot both get it.

use serde::{Deserialize, Serialize};

use super::command::{Outcome, Rejection};
use super::{count, decode, encode, key, BlobRecord, Txn, BLOB, LINK, REPO};
use crate::error::{Error, Result};
use crate::types::{Digest, RepoName};

pub(super) const QUOTA: u8 = b'O'; // O<namespace> -> Quota
const USAGE: u8 = b'U'; // U<namespace> -> u64 bytes
const HELD: u8 = b'H'; // H<namespace>\0<digest> -> u64 repositories of the namespace linking it

/// The limits of one namespace; `None` is no limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub namespace: String,
    pub max_bytes: Option<u64>,
    pub max_repositories: Option<u64>,
}

/// A quota with what its namespace uses now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUsage {
    pub quota: Quota,
    pub bytes: u64,
    pub repositories: u64,
}

/// Which limit a push would pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaKind {
    Bytes,
    Repositories,
}

impl Quota {
    pub fn new(
        namespace: &str,
        max_bytes: Option<u64>,
        max_repositories: Option<u64>,
    ) -> Result<Quota> {
        // A namespace is a repository name (or a prefix of components of
        // one), so it is checked with the same grammar.
        RepoName::parse(namespace).map_err(|_| {
            Error::InvalidRule(format!(
                "namespace {namespace:?}: a repository name or a prefix of one, such as team-a"
            ))
        })?;
        if max_bytes.is_none() && max_repositories.is_none() {
            return Err(Error::InvalidRule(
                "a quota limits bytes, repositories or both".into(),
            ));
        }
        Ok(Quota {
            namespace: namespace.to_owned(),
            max_bytes,
            max_repositories,
        })
    }

    pub fn covers(&self, repo: &RepoName) -> bool {
        let r = repo.as_str();
        r == self.namespace
            || (r.starts_with(&self.namespace)
                && r.as_bytes().get(self.namespace.len()) == Some(&b'/'))
    }
}

pub(super) fn all(tree: &sled::Tree) -> Result<Vec<Quota>> {
    tree.scan_prefix([QUOTA])
        .map(|kv| decode("quotas", &kv?.1))
        .collect()
}

fn covering(txn: &Txn<'_>, repo: &RepoName) -> Result<Vec<Quota>> {
    Ok(all(txn.tree)?
        .into_iter()
        .filter(|q| q.covers(repo))
        .collect())
}

/// Repositories of the namespace, counted from the repository records.
fn repositories(tree: &sled::Tree, namespace: &str) -> Result<u64> {
    let mut n = 0;
    for kv in tree.scan_prefix(key(REPO, &[namespace])) {
        let (k, _) = kv?;
        let name = &k[1..];
        if name.len() == namespace.len() || name.get(namespace.len()) == Some(&b'/') {
            n += 1;
        }
    }
    Ok(n)
}

pub(super) fn usage(tree: &sled::Tree) -> Result<Vec<QuotaUsage>> {
    all(tree)?
        .into_iter()
        .map(|q| {
            let bytes = count(tree.get(key(USAGE, &[&q.namespace]))?.as_deref());
            let repositories = repositories(tree, &q.namespace)?;
            Ok(QuotaUsage {
                quota: q,
                bytes,
                repositories,
            })
        })
        .collect()
}

fn exceeded(q: &Quota, kind: QuotaKind, limit: u64, used: u64, adding: u64) -> Outcome {
    Outcome::Rejected(Rejection::QuotaExceeded {
        namespace: q.namespace.clone(),
        kind,
        limit,
        used,
        adding,
    })
}

/// The blob's size, read only where a quota needs it (links without
/// quotas stay a write of the link alone).
fn blob_size(txn: &Txn<'_>, digest: &Digest) -> Result<u64> {
    Ok(match txn.get(&key(BLOB, &[digest.as_str()]))? {
        Some(b) => decode::<BlobRecord>("blobs", &b)?.size,
        None => 0,
    })
}

/// Before `repo` gets a new link to `digest`: the rejection if a quota
/// would be passed; otherwise the usage is counted. `new_repo`: the
/// repository does not exist yet.
pub(super) fn admit_link(
    txn: &mut Txn<'_>,
    repo: &RepoName,
    digest: &Digest,
    new_repo: bool,
) -> Result<Option<Outcome>> {
    let quotas = covering(txn, repo)?;
    let size = if quotas.is_empty() {
        0
    } else {
        blob_size(txn, digest)?
    };
    for q in quotas {
        if let (true, Some(max)) = (new_repo, q.max_repositories) {
            let have = repositories(txn.tree, &q.namespace)?;
            if have + 1 > max {
                return Ok(Some(exceeded(&q, QuotaKind::Repositories, max, have, 1)));
            }
        }
        let held = key(HELD, &[&q.namespace, digest.as_str()]);
        if count(txn.get(&held)?.as_deref()) == 0 {
            let uk = key(USAGE, &[&q.namespace]);
            let used = count(txn.get(&uk)?.as_deref());
            if let Some(max) = q.max_bytes {
                if used.saturating_add(size) > max {
                    return Ok(Some(exceeded(&q, QuotaKind::Bytes, max, used, size)));
                }
            }
            txn.put(uk, used.saturating_add(size).to_be_bytes().to_vec());
        }
        txn.bump(held, 1)?;
    }
    Ok(None)
}

/// After `repo`'s link to `digest` went (before its record does): the
/// namespace's usage follows.
pub(super) fn release_link(txn: &mut Txn<'_>, repo: &RepoName, digest: &Digest) -> Result<()> {
    let quotas = covering(txn, repo)?;
    let size = if quotas.is_empty() {
        0
    } else {
        blob_size(txn, digest)?
    };
    for q in quotas {
        let held = key(HELD, &[&q.namespace, digest.as_str()]);
        if txn.get(&held)?.is_some() && txn.bump(held, -1)? == 0 {
            let uk = key(USAGE, &[&q.namespace]);
            let used = count(txn.get(&uk)?.as_deref());
            txn.put(uk, used.saturating_sub(size).to_be_bytes().to_vec());
        }
    }
    Ok(())
}

/// Sets a namespace's quota, counting what it already holds when the quota
/// is new (a limit under the current usage admits nothing new until usage
/// falls under it).
pub(super) fn set(txn: &mut Txn<'_>, quota: &Quota) -> Result<Outcome> {
    // The node checks a quota before proposing it; one that does not
    // check out is refused here, never an apply failure.
    let Ok(q) = Quota::new(&quota.namespace, quota.max_bytes, quota.max_repositories) else {
        return Ok(Outcome::Rejected(Rejection::Malformed));
    };
    let qk = key(QUOTA, &[&q.namespace]);
    if !txn.has(&qk)? {
        let mut bytes = 0u64;
        let prefix = key(LINK, &[&q.namespace]);
        for kv in txn.tree.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let text = String::from_utf8_lossy(&k[1..]).into_owned();
            let Some((repo, digest)) = text.split_once('\0') else {
                continue;
            };
            let (Ok(repo), Ok(digest)) = (RepoName::parse(repo), Digest::parse(digest)) else {
                continue;
            };
            if !q.covers(&repo) {
                continue;
            }
            let held = key(HELD, &[&q.namespace, digest.as_str()]);
            if txn.bump(held, 1)? == 1 {
                if let Some(b) = txn.get(&key(BLOB, &[digest.as_str()]))? {
                    bytes += decode::<BlobRecord>("blobs", &b)?.size;
                }
            }
        }
        txn.put(key(USAGE, &[&q.namespace]), bytes.to_be_bytes().to_vec());
    }
    txn.put(qk, encode(&q));
    Ok(Outcome::Done)
}

pub(super) fn remove(txn: &mut Txn<'_>, namespace: &str) -> Result<Outcome> {
    let qk = key(QUOTA, &[namespace]);
    if !txn.has(&qk)? {
        return Ok(Outcome::Rejected(Rejection::RuleUnknown));
    }
    txn.del(qk);
    txn.del(key(USAGE, &[namespace]));
    let mut prefix = key(HELD, &[namespace]);
    prefix.push(0);
    let held: Vec<Vec<u8>> = txn
        .tree
        .scan_prefix(&prefix)
        .keys()
        .collect::<std::result::Result<Vec<_>, _>>()?
        .into_iter()
        .map(|k| k.to_vec())
        .collect();
    for k in held {
        txn.del(k);
    }
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_covers_itself_and_what_is_below_it() {
        let q = Quota::new("team-a", Some(1), None).unwrap();
        let r = |s: &str| RepoName::parse(s).unwrap();
        assert!(q.covers(&r("team-a")));
        assert!(q.covers(&r("team-a/app")));
        assert!(q.covers(&r("team-a/x/y")));
        assert!(!q.covers(&r("team-ab")));
        assert!(!q.covers(&r("team/a")));
        assert!(Quota::new("Team", Some(1), None).is_err());
        assert!(Quota::new("team-a", None, None).is_err());
    }
}
