//! The claims of the tokens Tollgate signs: access tokens per RFC 9068
//! (`typ: at+jwt`) and ID tokens per OpenID Connect Core. Verifiers
//! elsewhere (the client crate's layer, PyJWT, any JOSE library) read
//! these names, so they are the contract: change them only additively.

use serde::{Deserialize, Serialize};

/// The JWS `typ` of access tokens (RFC 9068 section 2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// The JWS `typ` of ID tokens.
pub const ID_TOKEN_TYP: &str = "JWT";

/// One audience or several: RFC 7519 allows a string or an array, and
/// verifiers must accept both; Tollgate writes a string when there is
/// one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    /// From a list: a string when there is exactly one.
    pub fn from_list(mut list: Vec<String>) -> Self {
        if list.len() == 1 {
            Audience::One(list.remove(0))
        } else {
            Audience::Many(list)
        }
    }

    /// Whether `aud` is among them.
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(all) => all.iter().any(|a| a == aud),
        }
    }

    /// Every audience.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(all) => all.clone(),
        }
    }
}

/// Who acts for the subject (RFC 8693 section 4.1): the client's service
/// account, and the actor it in turn acted for, if the subject token was
/// itself delegated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The acting principal's resource name.
    pub sub: String,
    /// The acting client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// An earlier actor in the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

/// An access token's claims (RFC 9068 section 2.2, plus Tollgate's
/// `org`, `roles` and `uid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The issuer: Tollgate's `--issuer`.
    pub iss: String,
    /// The principal's resource name
    /// (`organizations/{org}/users/{user}` or `…/serviceAccounts/{sa}`).
    pub sub: String,
    /// Who may accept it.
    pub aud: Audience,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Unique id, for revocation.
    pub jti: String,
    /// The client the token was issued to (its resource name).
    pub client_id: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The principal's organization id.
    pub org: String,
    /// The principal's roles in `org` when the token was issued.
    pub roles: Vec<String>,
    /// The principal's uid: a principal deleted and re-created under the
    /// same name does not inherit the old one's tokens.
    pub uid: String,
    /// When the user signed in (code and refresh grants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// Delegation (token exchange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
}

/// An ID token's claims (OpenID Connect Core section 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaims {
    /// The issuer.
    pub iss: String,
    /// The user's resource name.
    pub sub: String,
    /// The client id.
    pub aud: String,
    /// Expiry.
    pub exp: i64,
    /// Issue time.
    pub iat: i64,
    /// When the user signed in.
    pub auth_time: i64,
    /// The authorization request's nonce, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Left half of the access token's hash (section 3.1.3.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// The authorized party: the client.
    pub azp: String,
    /// With scope `profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// With scope `email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// With scope `email`: Tollgate does not verify addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

/// `at_hash`: base64url of the left half of the hash of the access token's
/// ASCII, the hash being the one of the ID token's algorithm (SHA-256 for
/// ES256 and RS256; SHA-512 for EdDSA with Ed25519, per the OpenID
/// Foundation's errata for EdDSA).
pub fn at_hash(access_token: &str, alg_is_eddsa: bool) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let full: Vec<u8> = if alg_is_eddsa {
        sha2::Sha512::digest(access_token.as_bytes()).to_vec()
    } else {
        sha2::Sha256::digest(access_token.as_bytes()).to_vec()
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&full[..full.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_serialize_as_a_string_when_single() {
        let one = serde_json::to_value(Audience::from_list(vec!["a".into()])).unwrap();
        assert_eq!(one, serde_json::json!("a"));
        let two = serde_json::to_value(Audience::from_list(vec!["a".into(), "b".into()])).unwrap();
        assert_eq!(two, serde_json::json!(["a", "b"]));
        let read: Audience = serde_json::from_value(serde_json::json!(["x", "y"])).unwrap();
        assert!(read.contains("y") && !read.contains("z"));
    }

    #[test]
    fn at_hash_is_the_left_half() {
        // OIDC Core's example: the SHA-256 left half, base64url, of
        // "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y".
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y", false),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(at_hash("x", true).len(), 43);
    }
}
