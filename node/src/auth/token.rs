//! Registry tokens (the Docker/OCI token flow): short-lived JWTs signed
//! with HMAC-SHA256 under a replicated cluster key, so every node accepts
//! what any node issued; refresh tokens for `docker login`'s identity
//! token; and the `scope` strings clients ask for.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use stowage_storage::meta::access::{AccountKind, Actions, SigningKey};

use crate::error::{Error, Result};

const ISSUER: &str = "stowage";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    Access,
    Refresh,
}

/// One entry of a token's `access` claim (the Docker token format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl ResourceAccess {
    pub fn actions(&self) -> Actions {
        Actions::parse(&self.actions.join(",")).unwrap_or(Actions::NONE)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The account name; empty for an anonymous token.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(rename = "use")]
    pub token_use: TokenUse,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AccountKind>,
    /// The account's generation when issued: a password change or a
    /// re-created account invalidates earlier tokens.
    #[serde(default)]
    pub gen: u64,
    #[serde(default)]
    pub access: Vec<ResourceAccess>,
}

pub fn sign(claims: &Claims, key: &SigningKey) -> Result<String> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    let enc = EncodingKey::from_secret(&key.secret)
        .map_err(|e| Error::Unavailable(format!("the signing key: {e}")))?;
    jsonwebtoken::encode(&header, claims, &enc)
        .map_err(|e| Error::Unavailable(format!("signing a token: {e}")))
}

/// Why a token was refused (said in the 401, never with the token).
/// The signing key a token names, if its header decodes.
pub fn key_id(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).ok()?.kid
}

pub fn verify(
    token: &str,
    keys: &[SigningKey],
    audience: &str,
) -> std::result::Result<Claims, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token".to_string())?;
    if header.alg != Algorithm::HS256 {
        return Err("token signed with an unexpected algorithm".into());
    }
    let kid = header.kid.ok_or("token names no signing key")?;
    let key = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or("token signed with an unknown or retired key")?;
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[audience]);
    v.leeway = 5;
    v.validate_nbf = true;
    let dec =
        DecodingKey::from_secret(&key.secret).map_err(|_| "unusable signing key".to_string())?;
    let data = jsonwebtoken::decode::<Claims>(token, &dec, &v).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_string(),
        jsonwebtoken::errors::ErrorKind::InvalidAudience => "token for another service".to_string(),
        jsonwebtoken::errors::ErrorKind::InvalidSignature => "token signature invalid".to_string(),
        _ => "token invalid".to_string(),
    })?;
    Ok(data.claims)
}

pub fn claims(
    sub: &str,
    kind: Option<AccountKind>,
    gen: u64,
    audience: &str,
    token_use: TokenUse,
    now_secs: u64,
    ttl_secs: u64,
    access: Vec<ResourceAccess>,
) -> Result<Claims> {
    Ok(Claims {
        iss: ISSUER.into(),
        sub: sub.into(),
        aud: audience.into(),
        exp: now_secs + ttl_secs,
        nbf: now_secs.saturating_sub(1),
        iat: now_secs,
        jti: hex::encode(super::identity::random_bytes::<12>()?),
        token_use,
        kind,
        gen,
        access,
    })
}

/// One requested scope: `repository:NAME:pull,push` or
/// `registry:catalog:*`. Repository names hold no `:`, but a scope's type
/// may carry a class (`repository(plugin)`), so split on the first and the
/// last colon.
pub fn parse_scope(s: &str) -> Option<(String, String, Actions)> {
    let (kind, rest) = s.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let kind = kind.split('(').next().unwrap_or(kind);
    Some((
        kind.to_owned(),
        name.to_owned(),
        Actions::parse(actions).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            secret: vec![9; 32],
            created_ms: 0,
            retired_ms: None,
        }
    }

    fn now() -> u64 {
        crate::registry::now_ms() / 1000
    }

    #[test]
    fn tokens_verify_under_their_key_and_audience_only() {
        let c = claims(
            "alice",
            Some(AccountKind::User),
            3,
            "svc",
            TokenUse::Access,
            now(),
            60,
            vec![],
        )
        .unwrap();
        let t = sign(&c, &key("k1")).unwrap();
        let back = verify(&t, &[key("k1")], "svc").unwrap();
        assert_eq!((back.sub.as_str(), back.gen), ("alice", 3));
        assert!(verify(&t, &[key("k1")], "other")
            .unwrap_err()
            .contains("another service"));
        assert!(verify(&t, &[key("k2")], "svc")
            .unwrap_err()
            .contains("unknown"));
        let mut forged = key("k1");
        forged.secret = vec![1; 32];
        assert!(verify(&t, &[forged], "svc")
            .unwrap_err()
            .contains("signature"));
        assert!(verify("not.a.token", &[key("k1")], "svc").is_err());
        let old = claims(
            "alice",
            None,
            3,
            "svc",
            TokenUse::Access,
            now() - 600,
            60,
            vec![],
        )
        .unwrap();
        let t = sign(&old, &key("k1")).unwrap();
        assert!(verify(&t, &[key("k1")], "svc")
            .unwrap_err()
            .contains("expired"));
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(
            parse_scope("repository:team/app:pull,push"),
            Some((
                "repository".into(),
                "team/app".into(),
                Actions::parse("pull,push").unwrap()
            ))
        );
        assert_eq!(
            parse_scope("registry:catalog:*").map(|s| s.2),
            Some(Actions::ADMIN)
        );
        assert_eq!(parse_scope("garbage"), None);
    }
}
