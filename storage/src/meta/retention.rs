//! Retention as replicated state: rules by repository glob that say which
//! tags to keep (the newest N, those pushed within a time, those matching a
//! tag glob) and how long untagged manifests stay. A GC pass reads what the
//! rules let go (`retention_candidates`) and proposes it; apply checks each
//! tag again, so a tag pushed again meanwhile, or made immutable, stays.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{Outcome, Rejection};
use super::records::{ManifestRecord, RepoManifest};
use super::{
    decode, encode, key, policy, repo_prefix, StateMachine, Txn, MANIFEST, REPO_MANIFEST, TAG,
};
use crate::error::{Error, Result};
use crate::types::{Digest, RepoName, Tag};

pub(super) const RETENTION: u8 = b'X'; // X<repositories> -> RetentionRule
pub(super) const TAG_TIME: u8 = b'W'; // W<repo>\0<tag> -> u64 ms the tag got its manifest

/// What to keep in repositories matching `repositories` (a glob: `*`
/// within a path component, `**` across). A tag stays if any criterion
/// keeps it; with neither `keep_last` nor `keep_within_secs` the rule
/// removes no tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRule {
    pub repositories: String,
    /// The newest N tags (by when they got their manifest).
    pub keep_last: Option<u64>,
    /// Tags that got their manifest within this many seconds.
    pub keep_within_secs: Option<u64>,
    /// Tags matching this glob always stay (e.g. `v*`, `release-*`).
    pub keep_tags: Option<String>,
    /// Untagged manifests go after this many seconds untagged.
    pub untagged_after_secs: Option<u64>,
}

fn glob(pattern: &str) -> std::result::Result<globset::GlobMatcher, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
}

impl RetentionRule {
    pub fn check(&self) -> Result<()> {
        for (what, p) in [
            ("repositories", Some(&self.repositories)),
            ("keep_tags", self.keep_tags.as_ref()),
        ] {
            let Some(p) = p else { continue };
            if p.is_empty() || p.len() > 255 || p.contains('\0') {
                return Err(Error::InvalidRule(format!(
                    "{what} pattern: 1-255 characters"
                )));
            }
            glob(p).map_err(|e| Error::InvalidRule(format!("{what} pattern {p:?}: {e}")))?;
        }
        if self.keep_last.is_none()
            && self.keep_within_secs.is_none()
            && self.untagged_after_secs.is_none()
        {
            return Err(Error::InvalidRule(
                "a retention rule needs keep_last, keep_within or untagged_after".into(),
            ));
        }
        Ok(())
    }

    pub fn covers(&self, repo: &RepoName) -> bool {
        glob(&self.repositories).is_ok_and(|g| g.is_match(repo.as_str()))
    }

    fn removes_tags(&self) -> bool {
        self.keep_last.is_some() || self.keep_within_secs.is_some()
    }

    fn key(&self) -> Vec<u8> {
        key(RETENTION, &[&self.repositories])
    }
}

pub(super) fn set(txn: &mut Txn<'_>, rule: &RetentionRule) -> Result<Outcome> {
    if rule.check().is_err() {
        return Ok(Outcome::Rejected(Rejection::Malformed));
    }
    txn.put(rule.key(), encode(rule));
    Ok(Outcome::Done)
}

pub(super) fn remove(txn: &mut Txn<'_>, repositories: &str) -> Result<Outcome> {
    let k = key(RETENTION, &[repositories]);
    if !txn.has(&k)? {
        return Ok(Outcome::Rejected(Rejection::RuleUnknown));
    }
    txn.del(k);
    Ok(Outcome::Done)
}

pub(super) fn all(tree: &sled::Tree) -> Result<Vec<RetentionRule>> {
    tree.scan_prefix([RETENTION])
        .map(|kv| decode("retention rules", &kv?.1))
        .collect()
}

/// Removes the tags a GC pass found expired, each only if it still names
/// the manifest the pass saw and no immutable-tag rule keeps it.
pub(super) fn expire(
    txn: &mut Txn<'_>,
    repo: &RepoName,
    tags: &[(Tag, Digest)],
    now_ms: u64,
) -> Result<Outcome> {
    for (tag, digest) in tags {
        let tk = key(TAG, &[repo.as_str(), tag.as_str()]);
        if txn.get(&tk)?.as_deref() != Some(digest.as_str().as_bytes()) {
            continue;
        }
        if policy::guard(txn, repo, tag)?.is_some() {
            continue;
        }
        txn.del(tk);
        txn.del(key(TAG_TIME, &[repo.as_str(), tag.as_str()]));
        StateMachine::untag(txn, repo, digest.as_str().as_bytes(), now_ms)?;
    }
    Ok(Outcome::Done)
}

/// What the retention rules let go now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionCandidates {
    /// Tags to remove, per repository, with the manifest each names now.
    pub tags: BTreeMap<RepoName, Vec<(Tag, Digest)>>,
    /// Untagged manifests old enough under a rule, with that rule's delay.
    pub manifests: Vec<(RepoName, Digest, u64)>,
}

impl StateMachine {
    pub fn retention_rules(&self) -> Result<Vec<RetentionRule>> {
        all(&self.tree())
    }

    /// Scans the repositories the rules cover for the tags they let go and
    /// the untagged manifests past their delay.
    pub fn retention_candidates(&self, now_ms: u64) -> Result<RetentionCandidates> {
        let rules = self.retention_rules()?;
        let mut out = RetentionCandidates::default();
        if rules.is_empty() {
            return Ok(out);
        }
        let tree = self.tree();
        let mut after: Option<String> = None;
        loop {
            let (repos, more) = self.repositories(after.as_deref(), 1000)?;
            for repo in &repos {
                let applying: Vec<&RetentionRule> =
                    rules.iter().filter(|r| r.covers(repo)).collect();
                if applying.is_empty() {
                    continue;
                }
                if applying.iter().any(|r| r.removes_tags()) {
                    let expired = expired_tags(&tree, repo, &applying, now_ms)?;
                    if !expired.is_empty() {
                        out.tags.insert(repo.clone(), expired);
                    }
                }
                // The shortest delay of the rules that set one.
                if let Some(delay) = applying.iter().filter_map(|r| r.untagged_after_secs).min() {
                    let delay_ms = delay.saturating_mul(1000);
                    for kv in tree.scan_prefix(repo_prefix(REPO_MANIFEST, repo)) {
                        let (k, v) = kv?;
                        let p: RepoManifest = decode("repository manifests", &v)?;
                        if p.tags == 0
                            && p.parents == 0
                            && p.untagged_ms.saturating_add(delay_ms) <= now_ms
                        {
                            let text = String::from_utf8_lossy(
                                &k[repo_prefix(REPO_MANIFEST, repo).len()..],
                            )
                            .into_owned();
                            if let Ok(d) = Digest::parse(&text) {
                                out.manifests.push((repo.clone(), d, delay_ms));
                            }
                        }
                    }
                }
            }
            if !more {
                break;
            }
            after = repos.last().map(|r| r.to_string());
        }
        Ok(out)
    }
}

fn expired_tags(
    tree: &sled::Tree,
    repo: &RepoName,
    rules: &[&RetentionRule],
    now_ms: u64,
) -> Result<Vec<(Tag, Digest)>> {
    let prefix = repo_prefix(TAG, repo);
    // (pushed at, tag, manifest), newest first.
    let mut tags = Vec::new();
    for kv in tree.scan_prefix(&prefix) {
        let (k, v) = kv?;
        let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        let (Ok(tag), Ok(digest)) = (
            Tag::parse(&name),
            Digest::parse(&String::from_utf8_lossy(&v)),
        ) else {
            continue;
        };
        let at = match tree.get(key(TAG_TIME, &[repo.as_str(), tag.as_str()]))? {
            Some(b) => super::count(Some(&b)),
            // Tags pushed before times were kept: their manifest's time.
            None => match tree.get(key(MANIFEST, &[digest.as_str()]))? {
                Some(b) => decode::<ManifestRecord>("manifests", &b)?.created_ms,
                None => 0,
            },
        };
        tags.push((at, tag, digest));
    }
    tags.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.as_str().cmp(a.1.as_str())));
    // Only rules that remove tags decide; immutable tags always stay.
    let rules: Vec<&&RetentionRule> = rules.iter().filter(|r| r.removes_tags()).collect();
    let immutable = policy::list(tree)?;
    let keeps = |i: usize, at: u64, tag: &Tag| {
        rules.iter().any(|r| {
            r.keep_last.is_some_and(|n| (i as u64) < n)
                || r.keep_within_secs
                    .is_some_and(|s| at.saturating_add(s.saturating_mul(1000)) > now_ms)
                || r.keep_tags
                    .as_deref()
                    .is_some_and(|p| glob(p).is_ok_and(|g| g.is_match(tag.as_str())))
        }) || immutable.iter().any(|rule| rule.covers(repo, tag))
    };
    Ok(tags
        .into_iter()
        .enumerate()
        .filter(|(i, (at, tag, _))| !keeps(*i, *at, tag))
        .map(|(_, (_, tag, digest))| (tag, digest))
        .collect())
}
