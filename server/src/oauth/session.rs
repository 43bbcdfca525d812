//! What the sign-in flow hands the browser, each signed with an HMAC key
//! derived from the key-encryption key (so every replica that shares the
//! KEK accepts it, and none is generated per process):
//!
//! - the session cookie ([`Session`]): who signed in, when, until when;
//! - the pending authorization request ([`Pending`]): the original
//!   `/oauth2/authorize` parameters, carried through the forms in one
//!   hidden field so nothing the user submits can change them;
//! - CSRF tokens: an HMAC of the browser's random CSRF cookie and the
//!   pending request, so a form posted from another site (which can
//!   neither read the cookie nor forge the HMAC) is refused.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::HeaderMap;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::keys::KeyRing;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tg_session";
/// The CSRF cookie's name.
pub const CSRF_COOKIE: &str = "tg_csrf";
/// How long a sign-in lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);
/// How long a user may take between opening the authorization URL and
/// the last form.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The longest signed value accepted, so a huge cookie or field costs no
/// decoding work.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A signed-in user, as the session cookie says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The user's organization.
    pub org: String,
    /// The user id in `organizations/{org}/users/{user}`.
    pub user: String,
    /// The user's uid: a user deleted and created again under the same id
    /// is another user, whose session this is not.
    pub uid: String,
    /// When the user signed in (seconds since the epoch).
    pub auth_time: i64,
    /// When the session ends (seconds since the epoch).
    pub exp: i64,
}

/// An authorization request waiting for sign-in or consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The query parameters of `/oauth2/authorize`, as sent.
    pub params: Vec<(String, String)>,
    /// When the request arrived (seconds): `prompt=login` needs a sign-in
    /// after it.
    pub iat: i64,
    /// When it stops being accepted (seconds).
    pub exp: i64,
}

/// The keys and cookie attributes of the sign-in flow.
pub struct Keys {
    session: hmac::Key,
    pending: hmac::Key,
    csrf: hmac::Key,
    /// `; Path=…; HttpOnly; SameSite=Lax[; Secure]`.
    attributes: String,
}

impl Keys {
    /// The keys derived from `keys`' key-encryption key; cookies get
    /// `Secure` when the issuer is https, and the path of the issuer's
    /// `/oauth2/` endpoints.
    pub fn new(keys: &KeyRing, issuer: &str) -> Self {
        let secure = issuer.starts_with("https://");
        let base_path = issuer
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("")
            .trim_end_matches('/');
        let mut attributes = format!("; Path={base_path}/oauth2/; HttpOnly; SameSite=Lax");
        if secure {
            attributes.push_str("; Secure");
        }
        Self {
            session: keys.hmac_key("tollgate oauth session cookie v1"),
            pending: keys.hmac_key("tollgate oauth pending request v1"),
            csrf: keys.hmac_key("tollgate oauth csrf v1"),
            attributes,
        }
    }

    /// The session cookie's value for `session`.
    pub fn seal_session(&self, session: &Session) -> String {
        seal(&self.session, session)
    }

    /// The session in a cookie value, if it is ours and not expired at
    /// `now` (seconds). Whether the user may still act is the caller's
    /// check.
    pub fn open_session(&self, value: &str, now: i64) -> Option<Session> {
        open::<Session>(&self.session, value).filter(|s| s.exp > now)
    }

    /// The hidden field carrying `pending`.
    pub fn seal_pending(&self, pending: &Pending) -> String {
        seal(&self.pending, pending)
    }

    /// The pending request in a form field, if it is ours and not expired
    /// at `now` (seconds).
    pub fn open_pending(&self, value: &str, now: i64) -> Option<Pending> {
        open::<Pending>(&self.pending, value).filter(|p| p.exp > now)
    }

    /// The CSRF token of a form showing `pending` to the browser holding
    /// `csrf_cookie`.
    pub fn csrf_token(&self, csrf_cookie: &str, pending: &str) -> String {
        let tag = hmac::sign(&self.csrf, &csrf_input(csrf_cookie, pending));
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `presented` is the CSRF token of `pending` for the browser
    /// holding `csrf_cookie` (compared in constant time).
    pub fn csrf_ok(&self, csrf_cookie: Option<&str>, pending: &str, presented: &str) -> bool {
        let (Some(cookie), Ok(tag)) = (
            csrf_cookie.filter(|c| !c.is_empty()),
            URL_SAFE_NO_PAD.decode(presented),
        ) else {
            return false;
        };
        hmac::verify(&self.csrf, &csrf_input(cookie, pending), &tag).is_ok()
    }

    /// `Set-Cookie` for the session.
    pub fn session_cookie(&self, value: &str) -> String {
        format!(
            "{SESSION_COOKIE}={value}{}; Max-Age={}",
            self.attributes,
            SESSION_LIFETIME.as_secs()
        )
    }

    /// `Set-Cookie` that removes the session.
    pub fn clear_session_cookie(&self) -> String {
        format!("{SESSION_COOKIE}={}; Max-Age=0", self.attributes)
    }

    /// `Set-Cookie` for the CSRF cookie (a browser-session cookie).
    pub fn csrf_cookie(&self, value: &str) -> String {
        format!("{CSRF_COOKIE}={value}{}", self.attributes)
    }
}

/// A fresh random CSRF cookie value.
pub fn new_csrf_value() -> String {
    let mut bytes = [0u8; 32];
    // A failure leaves zeros; the HMAC still binds the token to the
    // pending request, and the RNG does not fail in practice.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn csrf_input(cookie: &str, pending: &str) -> Vec<u8> {
    let mut input = Vec::with_capacity(cookie.len() + pending.len() + 1);
    input.extend_from_slice(cookie.as_bytes());
    input.push(b'|');
    input.extend_from_slice(pending.as_bytes());
    input
}

/// `base64url(json) "." base64url(hmac)`.
fn seal<T: Serialize>(key: &hmac::Key, value: &T) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default());
    let tag = hmac::sign(key, payload.as_bytes());
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fn open<T: DeserializeOwned>(key: &hmac::Key, token: &str) -> Option<T> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let (payload, tag) = token.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    hmac::verify(key, payload.as_bytes(), &tag).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(purpose: &str) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, purpose.as_bytes())
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_unchanged() {
        let s = Session {
            org: "acme".into(),
            user: "ed".into(),
            uid: "u1".into(),
            auth_time: 10,
            exp: 20,
        };
        let sealed = seal(&key("a"), &s);
        assert_eq!(open::<Session>(&key("a"), &sealed), Some(s.clone()));
        assert_eq!(open::<Session>(&key("b"), &sealed), None);
        // Another payload under the old tag.
        let forged = seal(
            &key("x"),
            &Session {
                user: "admin".into(),
                ..s
            },
        );
        let (payload, _) = forged.split_once('.').unwrap();
        let (_, tag) = sealed.split_once('.').unwrap();
        assert_eq!(
            open::<Session>(&key("a"), &format!("{payload}.{tag}")),
            None
        );
        assert_eq!(open::<Session>(&key("a"), "garbage"), None);
    }

    #[test]
    fn cookies_are_read_from_every_header() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; tg_csrf=abc".parse().unwrap());
        h.append(http::header::COOKIE, "tg_session=s.t".parse().unwrap());
        assert_eq!(cookie(&h, CSRF_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("s.t"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
