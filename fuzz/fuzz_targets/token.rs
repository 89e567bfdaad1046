//! Token, session id and cookie parsing: everything the gateway reads from a request
//! before it trusts it.
//!
//! The input is split at `0xFF` bytes (never part of UTF-8) into fields:
//! 0. a token, checked with `token::parse_token`;
//! 1. a token body, signed here with the worker key so the fuzzer gets past the
//!    signature into base64 and JSON; a token that parses must refresh into one that
//!    parses to the same session with the new expiry;
//! 2. a session id, checked with `token::session_belongs_to` for fields 3 and 4;
//! 3. a user and 4. an app: an id minted for them belongs to them and to no other
//!    (user, app) pair in the input;
//! 5. and on: `Cookie` header values for `identity::from_headers`. Each `@` is replaced
//!    by the value of a genuinely signed `tether_id` cookie. A verified identity must be
//!    that cookie's user, and after `identity::strip_from` no identity may be left.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use tether::auth::identity::{self, UserId};
use tether::auth::{Keys, Secret};
use tether::auth::token;

/// Keys, a user and the value of that user's signed cookie, made once.
struct Fixed {
    keys: Keys,
    user: UserId,
    cookie_value: String,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let keys = Secret::from_bytes(&[7u8; 32]).keys();
        let user = UserId::random();
        let set = identity::set_cookie_header(&user, &keys.cookie, false);
        let pair = set.to_str().unwrap().split(';').next().unwrap();
        let cookie_value = pair.split_once('=').unwrap().1.to_owned();
        Fixed {
            keys,
            user,
            cookie_value,
        }
    })
}

/// `body.sig(body)`, signed the way Bokeh signs tokens.
fn sign(keys: &Keys, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(keys.bokeh.as_str().as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!(
        "{body}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fuzz_target!(|data: &[u8]| {
    let f = fixed();
    let fields: Vec<String> = data
        .split(|b| *b == 0xFF)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let field = |i: usize| fields.get(i).map_or("", String::as_str);

    let _ = token::parse_token(&f.keys, field(0));

    if let Ok(tok) = token::parse_token(&f.keys, &sign(&f.keys, field(1))) {
        let fresh = token::parse_token(&f.keys, &tok.refreshed(&f.keys, tok.expiry ^ 1))
            .expect("a refreshed token parses");
        assert_eq!(fresh.session_id, tok.session_id);
        assert_eq!(fresh.expiry, tok.expiry ^ 1);
    }

    let (user, app) = (field(3), field(4));
    let _ = token::session_belongs_to(&f.keys, field(2), user, app);
    let minted = token::mint_session_id(&f.keys, user, app);
    assert!(token::session_belongs_to(&f.keys, &minted, user, app));
    // User ids never hold NUL (they are hex); with that, no other pair may claim the id.
    if !user.contains('\0') {
        for (i, j) in [(2, 4), (3, 2), (4, 3), (2, 3)] {
            let (u, a) = (field(i), field(j));
            if (u, a) != (user, app) && !u.contains('\0') {
                assert!(
                    !token::session_belongs_to(&f.keys, &minted, u, a),
                    "an id minted for ({user:?}, {app:?}) belongs to ({u:?}, {a:?})"
                );
            }
        }
    }

    let mut headers = HeaderMap::new();
    for raw in data.split(|b| *b == 0xFF).skip(5) {
        let text = String::from_utf8_lossy(raw).replace('@', &f.cookie_value);
        // Header bytes need not be UTF-8; keep the fuzzer's own when there is no `@`.
        let value = if raw.contains(&b'@') {
            HeaderValue::from_str(&text)
        } else {
            HeaderValue::from_bytes(raw)
        };
        if let Ok(v) = value {
            headers.append(COOKIE, v);
        }
    }
    if let Some(found) = identity::from_headers(&headers, &f.keys.cookie) {
        assert_eq!(
            found, f.user,
            "a cookie verified as a user it was not made for"
        );
    }
    identity::strip_from(&mut headers);
    assert_eq!(
        identity::from_headers(&headers, &f.keys.cookie),
        None,
        "the identity survived strip_from: {headers:?}"
    );
});
