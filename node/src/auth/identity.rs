//! Secrets: argon2id password hashes, robot tokens (random, stored as a
//! SHA-256 hash, compared in constant time), a cache so Basic auth on every
//! request does not pay argon2 each time, and the per-address limit on
//! failed logins. Nothing here logs or returns a secret.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use sha2::{Digest as _, Sha256};
use stowage_storage::meta::access::{Account, AccountKind};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// Robot tokens start with this, so a leaked one is easy to spot in logs
/// and secret scanners.
const ROBOT_TOKEN_PREFIX: &str = "stw_";
/// Verified passwords kept in memory (hashes of them, not the passwords).
const CACHE_ENTRIES: usize = 4096;
const CACHE_TTL: Duration = Duration::from_secs(300);
/// The window failed logins are counted in.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Unavailable(format!("no randomness: {e}")))?;
    Ok(b)
}

/// An argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> Result<String> {
    if password.len() < 8 {
        return Err(Error::AdminRequest(
            "a password needs at least 8 characters".into(),
        ));
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Unavailable(format!("hashing the password: {e}")))
}

/// A new robot token and the hash the account stores.
pub fn new_robot_token() -> Result<(String, String)> {
    let token = format!("{ROBOT_TOKEN_PREFIX}{}", hex::encode(random_bytes::<32>()?));
    let hash = robot_token_hash(&token);
    Ok((token, hash))
}

fn robot_token_hash(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// Checks a presented secret against an account's stored hash.
fn secret_matches(account: &Account, secret: &str) -> bool {
    match account.kind {
        AccountKind::Robot => {
            let want = account.secret_hash.as_bytes();
            let got = robot_token_hash(secret);
            want.ct_eq(got.as_bytes()).into()
        }
        AccountKind::User => PasswordHash::new(&account.secret_hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(secret.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false),
    }
}

/// Verifies Basic credentials, remembering recent successes (keyed by a
/// hash of name, secret and the stored hash, so a changed password or a
/// re-created account never hits an old entry).
#[derive(Default)]
pub struct Verifier {
    cache: Mutex<HashMap<[u8; 32], Instant>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Verifier {
    pub fn verify(&self, account: &Account, secret: &str) -> bool {
        let key: [u8; 32] = Sha256::new()
            .chain_update(account.name.as_str().as_bytes())
            .chain_update([0])
            .chain_update(secret.as_bytes())
            .chain_update([0])
            .chain_update(account.secret_hash.as_bytes())
            .finalize()
            .into();
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.get(&key).is_some_and(|t| t.elapsed() < CACHE_TTL) {
                return true;
            }
        }
        let ok = secret_matches(account, secret);
        if ok {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_ENTRIES {
                cache.retain(|_, t| t.elapsed() < CACHE_TTL);
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(key, Instant::now());
        }
        ok
    }

    /// Refuses an address that failed `limit` logins within the window.
    pub fn check_rate(&self, addr: Option<IpAddr>, limit: u32) -> Result<()> {
        let Some(addr) = addr else { return Ok(()) };
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&addr) {
            Some((since, n)) if *n >= limit && since.elapsed() < FAILURE_WINDOW => {
                Err(Error::TooManyRequests {
                    retry_after_secs: (FAILURE_WINDOW - since.elapsed()).as_secs().max(1),
                })
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, addr: Option<IpAddr>) {
        let Some(addr) = addr else { return };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 65_536 {
            failures.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
        }
        let e = failures.entry(addr).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= FAILURE_WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_storage::types::AccountName;

    fn account(kind: AccountKind, hash: String) -> Account {
        Account {
            name: AccountName::parse("x").unwrap(),
            kind,
            secret_hash: hash,
            created_ms: 0,
            expires_ms: None,
            generation: 1,
        }
    }

    #[test]
    fn passwords_and_robot_tokens_verify_only_themselves() {
        let v = Verifier::default();
        let user = account(AccountKind::User, hash_password("correct horse").unwrap());
        assert!(user.secret_hash.starts_with("$argon2id$"));
        assert!(v.verify(&user, "correct horse"));
        assert!(v.verify(&user, "correct horse"), "from the cache");
        assert!(!v.verify(&user, "correct horse!"));
        let (token, hash) = new_robot_token().unwrap();
        assert!(token.starts_with("stw_") && !hash.contains(&token));
        let robot = account(AccountKind::Robot, hash);
        assert!(v.verify(&robot, &token));
        assert!(!v.verify(&robot, "stw_0000"));
        assert!(hash_password("short").is_err());
    }

    #[test]
    fn failures_are_limited_per_address() {
        let v = Verifier::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(v.check_rate(Some(a), 3).is_ok());
            v.record_failure(Some(a));
        }
        assert!(matches!(
            v.check_rate(Some(a), 3),
            Err(Error::TooManyRequests { .. })
        ));
        assert!(v.check_rate(Some(b), 3).is_ok());
    }
}
