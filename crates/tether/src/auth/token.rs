//! Bokeh session ids and tokens: minting ids bound to a (user, app), checking and refreshing tokens.
//!
//! Formats follow `bokeh/util/token.py`: a signed id is `base + "." + sig(base)` and a token is
//! `b64(json) + "." + sig(b64(json))`, where `sig` is HMAC-SHA256 in URL-safe base64 without
//! padding, keyed with the UTF-8 bytes of `BOKEH_SECRET_KEY`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::distr::Alphanumeric;
use rand::RngExt;
use sha2::Sha256;

use super::secret::Keys;

type HmacSha256 = Hmac<Sha256>;

/// Random characters at the start of a session id's 44-character base.
const NONCE_LEN: usize = 20;
/// Hex characters of the ownership MAC that complete the base (96 bits).
const OWNER_MAC_LEN: usize = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the session token is not signed by this gateway")]
    BadSignature,
    #[error("the session token is malformed")]
    Malformed,
}

fn bokeh_sig(key: &str, data: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn verify_bokeh_sig(key: &str, data: &str, sig: &str) -> bool {
    let Ok(raw) = URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.verify_slice(&raw).is_ok()
}

fn owner_mac(keys: &Keys, user: &str, app: &str, nonce: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(&keys.session).expect("HMAC takes any key length");
    for part in [user, app, nonce] {
        mac.update(part.as_bytes());
        mac.update(b"\0");
    }
    let mut out = hex::encode(mac.finalize().into_bytes());
    out.truncate(OWNER_MAC_LEN);
    out
}

/// `len` random characters from `[A-Za-z0-9]`.
pub fn nonce(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Mints a signed Bokeh session id whose base also proves which (user, app) it belongs to.
pub fn mint_session_id(keys: &Keys, user: &str, app: &str) -> String {
    let nonce = nonce(NONCE_LEN);
    let base = format!("{nonce}{}", owner_mac(keys, user, app, &nonce));
    let sig = bokeh_sig(keys.bokeh.as_str(), &base);
    format!("{base}.{sig}")
}

/// True when `session_id` was minted by a gateway with these keys for exactly this (user, app).
pub fn session_belongs_to(keys: &Keys, session_id: &str, user: &str, app: &str) -> bool {
    let Some((base, sig)) = session_id.split_once('.') else {
        return false;
    };
    if base.len() != NONCE_LEN + OWNER_MAC_LEN || !base.is_ascii() {
        return false;
    }
    if !verify_bokeh_sig(keys.bokeh.as_str(), base, sig) {
        return false;
    }
    let (nonce, mac) = base.split_at(NONCE_LEN);
    // Constant-time enough: both sides are derived values of fixed length.
    owner_mac(keys, user, app, nonce)
        .as_bytes()
        .iter()
        .zip(mac.as_bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The claims of a token that the gateway has checked.
#[derive(Debug, Clone)]
pub struct Token {
    /// The session the token opens.
    pub session_id: String,
    /// When the worker will refuse the token (epoch seconds).
    pub expiry: i64,
    /// The whole decoded JSON object, kept so a refreshed token carries the same payload.
    payload: serde_json::Map<String, serde_json::Value>,
}

/// Checks a token's signature with the worker key and reads its claims.
pub fn parse_token(keys: &Keys, token: &str) -> Result<Token, TokenError> {
    let (body, sig) = token.split_once('.').ok_or(TokenError::BadSignature)?;
    if !verify_bokeh_sig(keys.bokeh.as_str(), body, sig) {
        return Err(TokenError::BadSignature);
    }
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    let payload: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    let session_id = payload
        .get("session_id")
        .and_then(|v| v.as_str())
        .ok_or(TokenError::Malformed)?
        .to_owned();
    let expiry = payload
        .get("session_expiry")
        .and_then(|v| v.as_i64())
        .ok_or(TokenError::Malformed)?;
    Ok(Token {
        session_id,
        expiry,
        payload,
    })
}

impl Token {
    /// The same token with a new expiry, re-signed: the cure for stale tokens (bokeh#14416).
    pub fn refreshed(&self, keys: &Keys, expiry: i64) -> String {
        let mut payload = self.payload.clone();
        payload.insert("session_expiry".into(), expiry.into());
        encode_token(keys, &payload)
    }
}

/// A token for a session the gateway opens itself, with an empty request payload.
pub fn mint_token(keys: &Keys, session_id: &str, expiry: i64) -> String {
    let mut payload = serde_json::Map::new();
    payload.insert("session_id".into(), session_id.into());
    payload.insert("session_expiry".into(), expiry.into());
    encode_token(keys, &payload)
}

fn encode_token(keys: &Keys, payload: &serde_json::Map<String, serde_json::Value>) -> String {
    let json = serde_json::to_vec(payload).expect("a JSON map always serialises");
    let body = URL_SAFE_NO_PAD.encode(json);
    let sig = bokeh_sig(keys.bokeh.as_str(), &body);
    format!("{body}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;

    fn keys() -> Keys {
        Secret::from_bytes(&[7u8; 32]).keys()
    }

    #[test]
    fn session_id_has_bokeh_shape_and_binds_owner() {
        let k = keys();
        let id = mint_session_id(&k, "u1", "app");
        let (base, _) = id.split_once('.').unwrap();
        assert_eq!(base.len(), 44);
        assert!(base.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(session_belongs_to(&k, &id, "u1", "app"));
        assert!(!session_belongs_to(&k, &id, "u2", "app"));
        assert!(!session_belongs_to(&k, &id, "u1", "other"));
        let other = Secret::from_bytes(&[8u8; 32]).keys();
        assert!(!session_belongs_to(&other, &id, "u1", "app"));
        assert!(!session_belongs_to(&k, "garbage", "u1", "app"));
        assert!(!session_belongs_to(&k, "ä.ö", "u1", "app"));
    }

    #[test]
    fn refresh_keeps_payload_and_changes_expiry() {
        let k = keys();
        let t = mint_token(&k, "sid", 100);
        let parsed = parse_token(&k, &t).unwrap();
        assert_eq!(parsed.session_id, "sid");
        assert_eq!(parsed.expiry, 100);
        let fresh = parse_token(&k, &parsed.refreshed(&k, 5000)).unwrap();
        assert_eq!(fresh.expiry, 5000);
        assert_eq!(fresh.session_id, "sid");
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let k = keys();
        let t = mint_token(&k, "sid", 100);
        let mut bad = t.clone();
        bad.insert(3, 'x');
        assert_eq!(parse_token(&k, &bad).unwrap_err(), TokenError::BadSignature);
        assert!(parse_token(&k, "no-dot").is_err());
        let other = Secret::from_bytes(&[9u8; 32]).keys();
        assert!(parse_token(&other, &t).is_err());
    }

    /// Matches a signature computed by bokeh.util.token._signature("abc", b"key").
    #[test]
    fn signature_matches_bokeh() {
        assert_eq!(
            bokeh_sig("key", "abc"),
            "nBluMtwBdfhvSxy4konWYZ3mvuaZ5MN45oMJ7Zehpqs"
        );
    }
}
