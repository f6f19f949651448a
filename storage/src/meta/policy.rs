//! Tag policies as replicated state: immutable-tag rules (a repository glob
//! and a tag glob), checked in apply whenever a tag would move or go, so
//! every replica refuses the same writes. Unlike access rules (matched in
//! the node, per request), these are matched here, because apply is where
//! the decision is made; globset is deterministic, so every replica agrees.

use serde::{Deserialize, Serialize};

use super::command::{Outcome, Rejection};
use super::{key, Txn};
use crate::error::{Error, Result};
use crate::types::{RepoName, Tag};

pub(super) const IMMUTABLE: u8 = b'I'; // I<repositories>\0<tags> -> ()

/// Tags matching `tags` in repositories matching `repositories` can be
/// created but never moved to another manifest or deleted. Globs: `*` and
/// `?` stay within one path component, `**` crosses them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImmutableTags {
    pub repositories: String,
    pub tags: String,
}

fn glob(pattern: &str) -> std::result::Result<globset::GlobMatcher, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
}

impl ImmutableTags {
    pub fn new(repositories: &str, tags: &str) -> Result<ImmutableTags> {
        for (what, p) in [("repositories", repositories), ("tags", tags)] {
            if p.is_empty() || p.len() > 255 || p.contains('\0') {
                return Err(Error::InvalidRule(format!(
                    "{what} pattern: 1-255 characters"
                )));
            }
            glob(p).map_err(|e| Error::InvalidRule(format!("{what} pattern {p:?}: {e}")))?;
        }
        Ok(ImmutableTags {
            repositories: repositories.to_owned(),
            tags: tags.to_owned(),
        })
    }

    pub fn covers(&self, repo: &RepoName, tag: &Tag) -> bool {
        // Rules are checked when added; one that does not compile (it
        // cannot be stored) matches nothing.
        matches!((glob(&self.repositories), glob(&self.tags)),
            (Ok(r), Ok(t)) if r.is_match(repo.as_str()) && t.is_match(tag.as_str()))
    }

    fn key(&self) -> Vec<u8> {
        key(IMMUTABLE, &[&self.repositories, &self.tags])
    }
}

pub(super) fn add(txn: &mut Txn<'_>, rule: &ImmutableTags) -> Result<Outcome> {
    ImmutableTags::new(&rule.repositories, &rule.tags)?;
    txn.put(rule.key(), Vec::new());
    Ok(Outcome::Done)
}

pub(super) fn remove(txn: &mut Txn<'_>, rule: &ImmutableTags) -> Result<Outcome> {
    if !txn.has(&rule.key())? {
        return Ok(Outcome::Rejected(Rejection::RuleUnknown));
    }
    txn.del(rule.key());
    Ok(Outcome::Done)
}

pub(super) fn list(tree: &sled::Tree) -> Result<Vec<ImmutableTags>> {
    tree.scan_prefix([IMMUTABLE])
        .map(|kv| {
            let (k, _) = kv?;
            let text = std::str::from_utf8(&k[1..])
                .map_err(|_| Error::InvalidRule("stored tag rule key is not text".into()))?;
            let (repositories, tags) = text
                .split_once('\0')
                .ok_or_else(|| Error::InvalidRule("stored tag rule key has no tags".into()))?;
            Ok(ImmutableTags {
                repositories: repositories.to_owned(),
                tags: tags.to_owned(),
            })
        })
        .collect()
}

/// The rejection for moving or deleting `tag` in `repo`, if a rule keeps it.
pub(super) fn guard(txn: &Txn<'_>, repo: &RepoName, tag: &Tag) -> Result<Option<Outcome>> {
    Ok(list(txn.tree)?
        .into_iter()
        .find(|r| r.covers(repo, tag))
        .map(|rule| {
            Outcome::Rejected(Rejection::TagImmutable {
                tag: tag.clone(),
                rule,
            })
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_repositories_by_component_and_tags() {
        let r = ImmutableTags::new("prod/**", "v*").unwrap();
        let repo = |s: &str| RepoName::parse(s).unwrap();
        let tag = |s: &str| Tag::parse(s).unwrap();
        assert!(r.covers(&repo("prod/app"), &tag("v1.2")));
        assert!(r.covers(&repo("prod/team/app"), &tag("v1")));
        assert!(!r.covers(&repo("dev/app"), &tag("v1")));
        assert!(!r.covers(&repo("prod/app"), &tag("latest")));
        let one = ImmutableTags::new("library/*", "*").unwrap();
        assert!(one.covers(&repo("library/alpine"), &tag("3")));
        assert!(!one.covers(&repo("library/a/b"), &tag("3")));
        assert!(ImmutableTags::new("prod/[", "v*").is_err());
        assert!(ImmutableTags::new("", "v*").is_err());
    }
}
