//! The user Panel's own login (`--basic-auth`, `--oauth-*`) authenticated: the `user` cookie
//! its worker set with Tornado's `set_secure_cookie`, which tether verifies with the same
//! `--cookie-secret` and never takes on the browser's word.
//!
//! Tornado's version-2 signed value is `2|<len>:<key version>|<len>:<timestamp>|<len>:<name>|
//! <len>:<base64 value>|<hex HMAC-SHA256 of all before it>`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use http::header::COOKIE;
use http::HeaderMap;

/// The cookie Panel keeps its logged-in user in.
const USER_COOKIE: &str = "user";

/// The logged-in user's name, when the request carries a `user` cookie signed with `secret`
/// (the workers' `--cookie-secret`) no longer than `max_age` ago; `None` for anything else, a
/// guest included.
pub fn user(
    headers: &HeaderMap,
    secret: &str,
    max_age: Duration,
    now: SystemTime,
) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|text| text.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == USER_COOKIE)
        .find_map(|(_, value)| verify(value.trim_matches('"'), secret, max_age, now))
}

fn verify(value: &str, secret: &str, max_age: Duration, now: SystemTime) -> Option<String> {
    let rest = value.strip_prefix("2|")?;
    let (_key_version, rest) = field(rest)?;
    let (timestamp, rest) = field(rest)?;
    let (name, rest) = field(rest)?;
    let (encoded, signature) = field(rest)?;
    let signed = &value[..value.len() - signature.len()];
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(signed.as_bytes());
    mac.verify_slice(&hex::decode(signature).ok()?).ok()?;
    if name != USER_COOKIE {
        return None;
    }
    let signed_at = UNIX_EPOCH + Duration::from_secs(timestamp.parse().ok()?);
    if now.duration_since(signed_at).is_ok_and(|age| age > max_age) {
        return None;
    }
    let user = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(user).ok().filter(|u| !u.is_empty())
}

/// One `<len>:<value>|` field, and what follows it.
fn field(s: &str) -> Option<(&str, &str)> {
    let (len, rest) = s.split_once(':')?;
    let n: usize = len.parse().ok()?;
    let value = rest.get(..n)?;
    let after = rest.get(n..)?.strip_prefix('|')?;
    Some((value, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// A value as Tornado's `create_signed_value(secret, "user", user)` makes it at `at`.
    fn signed(secret: &str, name: &str, user: &str, at: u64) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(user);
        let at = at.to_string();
        let body = format!(
            "2|1:0|{}:{at}|{}:{name}|{}:{b64}|",
            at.len(),
            name.len(),
            b64.len()
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!("{body}{}", hex::encode(mac.finalize().into_bytes()))
    }

    fn with_cookie(text: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(text).unwrap());
        h
    }

    const NOW: u64 = 1_800_000_000;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_cookie_the_worker_signed_names_the_user() {
        let v = signed("s3cret", "user", "ada", NOW - 60);
        // Tornado quotes the value (it has '=' and '/'), among other cookies.
        let h = with_cookie(&format!("theme=dark; user=\"{v}\"; next_url=/x"));
        assert_eq!(user(&h, "s3cret", DAY, at(NOW)).as_deref(), Some("ada"));
        let h = with_cookie(&format!("user={v}"));
        assert_eq!(user(&h, "s3cret", DAY, at(NOW)).as_deref(), Some("ada"));
    }

    #[test]
    fn a_value_tornado_made_verifies() {
        // create_signed_value("e2e-cookie-secret", "user", "ada", clock=lambda: 1800000000)
        let captured = "2|1:0|10:1800000000|4:user|4:YWRh|4a4ca8da7a17d1bcf2df6e3a2b783cb5c9ca41bb3f71d4c61e687edf49b23331";
        let h = with_cookie(&format!("user=\"{captured}\""));
        assert_eq!(
            user(&h, "e2e-cookie-secret", DAY, at(NOW + 5)).as_deref(),
            Some("ada")
        );
    }

    #[test]
    fn anything_else_names_nobody() {
        let user = |v: String| {
            super::user(
                &with_cookie(&format!("user=\"{v}\"")),
                "s3cret",
                DAY,
                at(NOW),
            )
        };
        assert_eq!(
            user(signed("other", "user", "ada", NOW)),
            None,
            "another secret"
        );
        assert_eq!(
            user(signed("s3cret", "access_token", "ada", NOW)),
            None,
            "another cookie's value"
        );
        assert_eq!(
            user(signed("s3cret", "user", "ada", NOW - 2 * 86_400)),
            None,
            "expired"
        );
        let good = signed("s3cret", "user", "ada", NOW);
        assert_eq!(user(good.replace("YWRh", "Ym9i")), None, "a changed name");
        assert_eq!(user("2|1:0|garbage".into()), None);
        assert_eq!(
            user(base64::engine::general_purpose::STANDARD.encode("ada")),
            None,
            "unsigned"
        );
        assert_eq!(super::user(&HeaderMap::new(), "s3cret", DAY, at(NOW)), None);
    }
}
