//! The `tether_id` identity cookie: reading, minting, and keeping it away from workers.

use std::fmt;

use cookie::{Cookie, CookieJar, SameSite};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use rand::TryRng;

/// Name of the identity cookie.
pub const COOKIE_NAME: &str = "tether_id";

/// A user's identity: 128 random bits in hex. It is a bearer credential, so `Debug` shows a prefix only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn random() -> UserId {
        let mut raw = [0u8; 16];
        rand::rngs::SysRng
            .try_fill_bytes(&mut raw)
            .expect("the operating system's random number generator works");
        UserId(hex::encode(raw))
    }

    /// The id a logged-in name's state is kept under: a MAC of the name, so every gateway
    /// with the same secret derives the same id, and the name itself is never stored.
    pub fn from_login(name: &str, key: &[u8; 32]) -> UserId {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
        mac.update(name.as_bytes());
        UserId(hex::encode(&mac.finalize().into_bytes()[..16]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts only the shape `random` makes, so a signed but odd value is never trusted.
    fn parse(s: &str) -> Option<UserId> {
        (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| UserId(s.to_owned()))
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({}…)", &self.0[..6])
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Logs get a prefix only: enough to correlate, not enough to impersonate.
        write!(f, "{}…", &self.0[..6])
    }
}

/// The identity carried by a request's cookies: the first identity cookie whose signature is
/// good.
///
/// Others are ignored: a cookie planted by a sibling subdomain or over plain HTTP must
/// neither be taken for the user's own nor lock the browser out of its own.
pub fn from_headers(headers: &HeaderMap, key: &cookie::Key) -> Option<UserId> {
    for value in headers.get_all(COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for c in Cookie::split_parse(text).flatten() {
            if c.name() != COOKIE_NAME {
                continue;
            }
            let mut jar = CookieJar::new();
            jar.add_original(c.into_owned());
            if let Some(user) = jar
                .signed(key)
                .get(COOKIE_NAME)
                .and_then(|v| UserId::parse(v.value()))
            {
                return Some(user);
            }
        }
    }
    None
}

/// The `Set-Cookie` value for a new identity.
pub fn set_cookie_header(user: &UserId, key: &cookie::Key, secure: bool) -> HeaderValue {
    let mut jar = CookieJar::new();
    let cookie = Cookie::build((COOKIE_NAME, user.as_str().to_owned()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path("/")
        .max_age(cookie::time::Duration::days(365))
        .build();
    jar.signed_mut(key).add(cookie);
    let signed = jar.get(COOKIE_NAME).expect("just added").to_string();
    HeaderValue::from_str(&signed).expect("cookie text is a valid header")
}

/// Removes the identity cookie from forwarded headers, keeping every other cookie.
///
/// Workers copy request cookies into the session token, which sits in the page's JavaScript,
/// so the identity must never reach them: `HttpOnly` would mean nothing.
pub fn strip_from(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|text| text.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| c.split('=').next().map(str::trim) != Some(COOKIE_NAME))
        .map(str::to_owned)
        .collect();
    headers.remove(COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;

    fn key() -> cookie::Key {
        Secret::from_bytes(&[1u8; 32]).keys().cookie
    }

    fn request_with(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=1; {pair}; b=2")).unwrap(),
        );
        h
    }

    #[test]
    fn round_trip_and_attributes() {
        let user = UserId::random();
        let v = set_cookie_header(&user, &key(), true);
        let text = v.to_str().unwrap();
        for attr in [
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
            "Max-Age=31536000",
        ] {
            assert!(text.contains(attr), "{text} lacks {attr}");
        }
        assert_eq!(from_headers(&request_with(&v), &key()), Some(user));
        assert!(!set_cookie_header(&UserId::random(), &key(), false)
            .to_str()
            .unwrap()
            .contains("Secure"));
    }

    #[test]
    fn tampered_or_foreign_cookie_is_no_identity() {
        let user = UserId::random();
        let v = set_cookie_header(&user, &key(), false);
        let other_key = Secret::from_bytes(&[2u8; 32]).keys().cookie;
        assert_eq!(from_headers(&request_with(&v), &other_key), None);
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("tether_id=deadbeef"));
        assert_eq!(from_headers(&h, &key()), None);
    }

    #[test]
    fn a_planted_identity_cookie_neither_replaces_nor_locks_out_the_users_own() {
        let mine = UserId::random();
        let a = set_cookie_header(&mine, &key(), false);
        let pair = |v: &HeaderValue| v.to_str().unwrap().split(';').next().unwrap().to_owned();
        let forged = "tether_id=0123456789abcdef0123456789abcdef";
        for cookies in [
            format!("{forged}; {}", pair(&a)),
            format!("{}; {forged}", pair(&a)),
        ] {
            let mut h = HeaderMap::new();
            h.insert(COOKIE, HeaderValue::from_str(&cookies).unwrap());
            assert_eq!(from_headers(&h, &key()), Some(mine.clone()), "{cookies}");
        }
        // Two good ones: the first, as the browser orders them (its own, older one).
        let b = set_cookie_header(&UserId::random(), &key(), false);
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("{}; {}", pair(&a), pair(&b))).unwrap(),
        );
        assert_eq!(from_headers(&h, &key()), Some(mine));
    }

    #[test]
    fn strip_keeps_other_cookies() {
        let v = set_cookie_header(&UserId::random(), &key(), false);
        let mut h = request_with(&v);
        strip_from(&mut h);
        assert_eq!(h.get(COOKIE).unwrap(), "a=1; b=2");
        let mut only = HeaderMap::new();
        only.insert(COOKIE, HeaderValue::from_static("tether_id=x"));
        strip_from(&mut only);
        assert!(only.get(COOKIE).is_none());
    }
}
