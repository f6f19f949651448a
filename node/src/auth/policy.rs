//! The access rules compiled for matching: what a caller may do on a
//! repository is the union of every rule whose glob matches the name and
//! whose subject covers the caller. There are no deny rules, so the order
//! of rules never matters and `stowage access apply` can diff them as a
//! set.

use globset::{GlobBuilder, GlobMatcher};
use stowage_storage::meta::access::{AccessRule, Actions, Subject, ADMIN_PATTERN};
use stowage_storage::types::AccountName;

use crate::error::{Error, Result};

/// Who is asking, as far as rules are concerned.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    Anonymous,
    Account(&'a AccountName),
}

struct Compiled {
    matcher: GlobMatcher,
    rule: AccessRule,
}

pub struct Policy {
    rules: Vec<Compiled>,
}

/// Compiles a rule's pattern the way every node matches it: `*` and `?`
/// stay within one path component, `**` crosses them.
pub fn compile(pattern: &str) -> Result<GlobMatcher> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::AdminRequest(format!("pattern {pattern:?}: {e}")))
}

impl Policy {
    pub fn new(rules: Vec<AccessRule>) -> Policy {
        let rules = rules
            .into_iter()
            .filter_map(|rule| match compile(&rule.pattern) {
                Ok(matcher) => Some(Compiled { matcher, rule }),
                Err(e) => {
                    // Patterns are compiled before they are proposed; one
                    // that fails here grants nothing rather than failing
                    // every request.
                    tracing::warn!(error = %e, "an access rule does not compile; it grants nothing");
                    None
                }
            })
            .collect();
        Policy { rules }
    }

    fn covers(subject: &Subject, who: Who<'_>) -> bool {
        match (subject, who) {
            (Subject::Anonymous, _) => true,
            (Subject::Authenticated, Who::Account(_)) => true,
            (Subject::Account(n), Who::Account(a)) => n == a,
            _ => false,
        }
    }

    /// Everything `who` may do on `repo`.
    pub fn rights(&self, who: Who<'_>, repo: &str) -> Actions {
        self.rules
            .iter()
            .filter(|c| Self::covers(&c.rule.subject, who) && c.matcher.is_match(repo))
            .fold(Actions::NONE, |acc, c| acc.union(c.rule.actions))
    }

    /// Whether `who` administers the cluster: `admin` granted on `**`.
    pub fn is_admin(&self, who: Who<'_>) -> bool {
        self.rules.iter().any(|c| {
            c.rule.pattern == ADMIN_PATTERN
                && c.rule.actions.allows(Actions::ADMIN)
                && Self::covers(&c.rule.subject, who)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(p: &str, s: &str, a: &str) -> AccessRule {
        AccessRule::new(p, Subject::parse(s).unwrap(), Actions::parse(a).unwrap()).unwrap()
    }

    #[test]
    fn rights_are_the_union_of_matching_rules() {
        let alice = AccountName::parse("alice").unwrap();
        let bob = AccountName::parse("bob").unwrap();
        let p = Policy::new(vec![
            rule("library/*", "anonymous", "pull"),
            rule("team-a/**", "alice", "pull,push"),
            rule("team-a/**", "authenticated", "pull"),
            rule("team-a/tools", "bob", "delete"),
            rule("**", "root", "admin"),
        ]);
        let a = Who::Account(&alice);
        let b = Who::Account(&bob);
        assert_eq!(p.rights(Who::Anonymous, "library/alpine"), Actions::PULL);
        // `*` stays within one component.
        assert_eq!(p.rights(Who::Anonymous, "library/x/y"), Actions::NONE);
        assert_eq!(
            p.rights(a, "team-a/x/y"),
            Actions::parse("pull,push").unwrap()
        );
        // Anonymous grants reach signed-in callers too.
        assert_eq!(p.rights(a, "library/alpine"), Actions::PULL);
        assert_eq!(
            p.rights(b, "team-a/tools"),
            Actions::parse("pull,delete").unwrap()
        );
        assert_eq!(p.rights(Who::Anonymous, "team-a/tools"), Actions::NONE);
        assert!(!p.is_admin(a));
        let root = AccountName::parse("root").unwrap();
        assert!(p.is_admin(Who::Account(&root)));
        assert!(p
            .rights(Who::Account(&root), "any/thing")
            .allows(Actions::DELETE));
    }
}
