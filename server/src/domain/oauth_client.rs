//! The rules of OAuth clients (RFC 6749 section 2, OAuth 2.1): what a
//! client may be configured with, and the secret format.
//!
//! Decisions, beyond what the proto says:
//! - Redirect URIs are stored as sent and compared exactly by the authorize
//!   endpoint (OAuth 2.1 section 2.3.1). `http` is accepted only towards a
//!   loopback host (`127.0.0.1`, `[::1]`, `localhost`) for native apps
//!   (RFC 8252 section 7.3); anything else must be `https`. No fragment, no
//!   user info, no white space (lists are stored space-separated).
//! - `refresh_token` requires `authorization_code`: only the code grant
//!   issues refresh tokens here. `client_credentials` has no user to come
//!   back for (RFC 6749 section 4.4.3), and token exchange hands out
//!   short-lived delegated tokens that the service exchanges again.
//! - A public client cannot keep a secret, so it gets none, and it may use
//!   neither `client_credentials` nor token exchange (both authenticate the
//!   client itself), nor act as a service account.
//! - `client_credentials` requires a service account: the token's subject.
//! - A rotated secret keeps working for 24 hours unless the rotation says
//!   otherwise (0 to 7 days): long enough to redeploy every replica of a
//!   service, short enough that a leaked secret does not outlive a day.
//!   Only one previous secret is kept: rotating again ends the grace of
//!   the one before.

use std::{fmt, time::Duration};

use sha2::{Digest, Sha256};

use super::{
    FieldViolation, Violations,
    api_key::StoredDigest,
    scope::{Scope, Scopes},
};

/// The authorization code grant (with PKCE).
pub const AUTHORIZATION_CODE: &str = "authorization_code";
/// The refresh token grant.
pub const REFRESH_TOKEN: &str = "refresh_token";
/// The client credentials grant: the client acts as its service account.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// RFC 8693 token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Every grant a client may be allowed. Implicit and password do not exist.
pub const GRANT_TYPES: [&str; 4] = [
    AUTHORIZATION_CODE,
    REFRESH_TOKEN,
    CLIENT_CREDENTIALS,
    TOKEN_EXCHANGE,
];

/// The signature algorithms a client may choose, the default first.
pub const SIGNING_ALGORITHMS: [&str; 3] = ["EdDSA", "ES256", "RS256"];
/// Ed25519: small keys, fast, no parameter choices to get wrong.
pub const DEFAULT_SIGNING_ALGORITHM: &str = "EdDSA";

/// Most redirect URIs per client.
pub const MAX_REDIRECT_URIS: usize = 20;
/// Most audiences per client.
pub const MAX_AUDIENCES: usize = 20;
/// Longest redirect URI or audience, in bytes.
pub const MAX_URI_LEN: usize = 2000;

/// Access token lifetime when unset.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Shortest access token lifetime: clock skew alone eats seconds.
pub const MIN_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(60);
/// Longest access token lifetime: a JWT cannot be recalled once issued
/// except through the revocation list.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Refresh family lifetime when unset.
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Shortest refresh family lifetime.
pub const MIN_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Longest refresh family lifetime.
pub const MAX_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a rotated-out secret keeps working when the request does not
/// say.
pub const DEFAULT_SECRET_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The longest grace a rotation may give the previous secret.
pub const MAX_SECRET_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Every client secret starts with this, so secret scanners can find
/// leaked ones.
pub const SECRET_PREFIX: &str = "tgcs_";
/// 43 of `[A-Za-z0-9]`: about 256 bits.
pub const SECRET_LEN: usize = 43;

/// RFC 6749 section 2.1, as stored (`OAuthClient.ClientType` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientType {
    /// Can keep a secret.
    Confidential,
    /// Cannot: a browser or native app.
    Public,
}

impl ClientType {
    /// The stored (and proto) number.
    pub fn code(self) -> i16 {
        match self {
            ClientType::Confidential => 1,
            ClientType::Public => 2,
        }
    }

    /// The type of a stored or requested number; `None` for anything else.
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(ClientType::Confidential),
            2 => Some(ClientType::Public),
            _ => None,
        }
    }

    /// Reads the request's `client_type`, which is required.
    pub fn parse(field: &str, code: i32) -> Result<Self, FieldViolation> {
        Self::from_code(code)
            .ok_or_else(|| FieldViolation::new(field, "required; CONFIDENTIAL or PUBLIC"))
    }
}

/// Checks redirect URIs, recording a violation per bad entry
/// (`{field}[i]`); returns them de-duplicated, exactly as sent.
pub fn redirect_uris(v: &mut Violations, field: &str, uris: &[String]) -> Vec<String> {
    if uris.len() > MAX_REDIRECT_URIS {
        v.add(field, format!("at most {MAX_REDIRECT_URIS} redirect URIs"));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::with_capacity(uris.len());
    for (i, uri) in uris.iter().enumerate() {
        match check_redirect_uri(uri) {
            Ok(()) if !out.contains(uri) => out.push(uri.clone()),
            Ok(()) => {}
            Err(why) => v.add(format!("{field}[{i}]"), why),
        }
    }
    out
}

fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Err("must not be empty".into());
    }
    if uri.len() > MAX_URI_LEN {
        return Err(format!("must be at most {MAX_URI_LEN} characters"));
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    if uri.contains('#') {
        return Err("must not contain a fragment (RFC 6749 section 3.1.2)".into());
    }
    let parsed: http::Uri = uri
        .parse()
        .map_err(|_| "is not an absolute URI".to_owned())?;
    let (Some(scheme), Some(authority)) = (parsed.scheme_str(), parsed.authority()) else {
        return Err("must be an absolute URI with a host".into());
    };
    if authority.as_str().contains('@') {
        return Err("must not contain user information".into());
    }
    let host = authority.host();
    if host.is_empty() {
        return Err("must be an absolute URI with a host".into());
    }
    match scheme {
        "https" => Ok(()),
        "http" if is_loopback(host) => Ok(()),
        "http" => Err(
            "http is allowed only to a loopback host (127.0.0.1, [::1], localhost); use https"
                .into(),
        ),
        _ => Err("must be https (or http to a loopback host)".into()),
    }
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "[::1]" | "::1") || host.eq_ignore_ascii_case("localhost")
}

/// Checks grant types against [`GRANT_TYPES`], recording a violation per
/// unknown entry; returns them de-duplicated in order.
pub fn grant_types(v: &mut Violations, field: &str, grants: &[String]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::with_capacity(grants.len());
    for (i, g) in grants.iter().enumerate() {
        match GRANT_TYPES.into_iter().find(|k| k == g) {
            Some(k) if !out.contains(&k) => out.push(k),
            Some(_) => {}
            None => v.add(
                format!("{field}[{i}]"),
                format!(
                    "unknown grant type; expected one of {} (implicit and password grants do not exist)",
                    GRANT_TYPES.join(", ")
                ),
            ),
        }
    }
    if grants.is_empty() {
        v.add(field, "required; at least one grant type");
    }
    out
}

/// Parses the scopes a client may ask for (see `domain::scope`).
pub fn scopes(field: &str, scopes: &[String]) -> Result<Vec<Scope>, FieldViolation> {
    Scopes::parse_list(field, scopes.iter().map(String::as_str))
}

/// Checks audiences: absolute URIs (`https://billing.internal`,
/// `urn:acme:billing`) or plain identifiers (`billing`), without spaces.
/// Returns them de-duplicated in order.
pub fn audiences(v: &mut Violations, field: &str, audiences: &[String]) -> Vec<String> {
    if audiences.len() > MAX_AUDIENCES {
        v.add(field, format!("at most {MAX_AUDIENCES} audiences"));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::with_capacity(audiences.len());
    for (i, a) in audiences.iter().enumerate() {
        let bad = if a.is_empty() {
            Some("must not be empty")
        } else if a.len() > MAX_URI_LEN {
            Some("too long")
        } else if a.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("must not contain spaces or control characters")
        } else if a.contains(':') && !is_absolute_uri(a) {
            Some("is neither an absolute URI nor a plain identifier")
        } else {
            None
        };
        match bad {
            Some(why) => v.add(format!("{field}[{i}]"), why),
            None if !out.contains(a) => out.push(a.clone()),
            None => {}
        }
    }
    out
}

/// `scheme:rest` with an RFC 3986 scheme, no fragment.
fn is_absolute_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let scheme_ok = scheme
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
    scheme_ok && !rest.is_empty() && !s.contains('#')
}

/// A lifetime in whole seconds, `default` when unset, within
/// `min..=max`.
pub fn ttl(
    field: &str,
    value: Option<&prost_types::Duration>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<i64, FieldViolation> {
    let Some(d) = value else {
        return Ok(secs(default));
    };
    let range = || {
        FieldViolation::new(
            field,
            format!(
                "must be a whole number of seconds from {} to {}",
                human(min),
                human(max)
            ),
        )
    };
    if d.nanos != 0 || d.seconds < secs(min) || d.seconds > secs(max) {
        return Err(range());
    }
    Ok(d.seconds)
}

/// The grace of a rotated-out secret, in microseconds: 24 hours when
/// unset, 0 to cut the secret off at once, at most 7 days.
pub fn secret_grace(
    field: &str,
    value: Option<&prost_types::Duration>,
) -> Result<i64, FieldViolation> {
    let Some(d) = value else {
        return Ok(secs(DEFAULT_SECRET_GRACE) * 1_000_000);
    };
    let max = secs(MAX_SECRET_GRACE);
    let valid = (0..1_000_000_000).contains(&d.nanos)
        && (0..=max).contains(&d.seconds)
        && !(d.seconds == max && d.nanos > 0);
    if !valid {
        return Err(FieldViolation::new(
            field,
            format!(
                "must be from 0 (cut the old secret off at once) to {}",
                human(MAX_SECRET_GRACE)
            ),
        ));
    }
    Ok(d.seconds * 1_000_000 + i64::from(d.nanos / 1000))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// One of [`SIGNING_ALGORITHMS`]; the default when empty.
pub fn signing_algorithm(field: &str, alg: &str) -> Result<&'static str, FieldViolation> {
    if alg.is_empty() {
        return Ok(DEFAULT_SIGNING_ALGORITHM);
    }
    SIGNING_ALGORITHMS
        .into_iter()
        .find(|a| *a == alg)
        .ok_or_else(|| {
            FieldViolation::new(
                field,
                format!("must be one of {}", SIGNING_ALGORITHMS.join(", ")),
            )
        })
}

/// The settings whose combination is constrained, as they will be after
/// a create or an update.
#[derive(Debug, Clone, Copy)]
pub struct Combination<'a> {
    /// Confidential or public.
    pub client_type: ClientType,
    /// How many redirect URIs the client has.
    pub redirect_uris: usize,
    /// Its grant types.
    pub grant_types: &'a [&'a str],
    /// Whether it acts as a service account.
    pub has_service_account: bool,
}

/// Records what is wrong with a combination of settings; `prefix` is the
/// resource's field in the request (`oauth_client`).
pub fn check_combination(v: &mut Violations, prefix: &str, c: &Combination<'_>) {
    let has = |g: &str| c.grant_types.contains(&g);
    let grant_field = |g: &str| {
        let i = c.grant_types.iter().position(|x| *x == g).unwrap_or(0);
        format!("{prefix}.grant_types[{i}]")
    };
    if c.client_type == ClientType::Public {
        for g in [CLIENT_CREDENTIALS, TOKEN_EXCHANGE] {
            if has(g) {
                v.add(
                    grant_field(g),
                    format!("{g} needs a confidential client; a public client has no secret"),
                );
            }
        }
        if c.has_service_account {
            v.add(
                format!("{prefix}.service_account"),
                "a public client cannot act as a service account",
            );
        }
    }
    if has(AUTHORIZATION_CODE) && c.redirect_uris == 0 {
        v.add(
            format!("{prefix}.redirect_uris"),
            "the authorization_code grant needs at least one redirect URI",
        );
    }
    if has(REFRESH_TOKEN) && !has(AUTHORIZATION_CODE) {
        v.add(
            grant_field(REFRESH_TOKEN),
            "refresh_token needs authorization_code: only the code grant issues refresh tokens",
        );
    }
    if has(CLIENT_CREDENTIALS) && !c.has_service_account && c.client_type != ClientType::Public {
        v.add(
            format!("{prefix}.service_account"),
            "required for the client_credentials grant: the service account the client acts as",
        );
    }
}

/// A client secret: `tgcs_` and 256 random bits in base62. Its `Debug`
/// prints nothing of it.
pub type ClientSecret = super::secret::Secret;

/// A freshly minted secret and its stored digest.
#[derive(Debug)]
pub struct MintedSecret {
    /// `tgcs_` and 43 base62 characters, shown once.
    pub secret: ClientSecret,
    /// Hex SHA-256 of the whole secret.
    pub digest: String,
}

/// Mints a secret from the OS-seeded thread RNG.
pub fn mint_secret() -> MintedSecret {
    let secret = ClientSecret::mint(SECRET_PREFIX);
    MintedSecret {
        digest: secret.digest(),
        secret,
    }
}

/// A presented secret, hashed once for comparison with one or two stored
/// digests.
pub struct PresentedSecret([u8; 32]);

impl PresentedSecret {
    /// Hashes a presented secret. Malformed secrets hash too: they simply
    /// match nothing, and the caller learns nothing from the timing.
    pub fn new(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Constant-time comparison with a stored hex digest.
    pub fn matches(&self, stored_hex: &str) -> bool {
        StoredDigest::parse(stored_hex).is_some_and(|stored| stored.matches(&self.0))
    }
}

impl fmt::Debug for PresentedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresentedSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn fields(v: &Violations) -> Vec<&str> {
        v.0.iter().map(|f| f.field.as_str()).collect()
    }

    #[test]
    fn redirect_uri_rules() {
        let ok = [
            "https://app.example.com/cb",
            "https://app.example.com:8443/cb?x=1",
            "http://127.0.0.1:8080/cb",
            "http://[::1]/cb",
            "http://localhost:1234/",
        ];
        let mut v = Violations::default();
        let got = redirect_uris(&mut v, "r", &strings(&ok));
        assert!(v.0.is_empty(), "{v}");
        assert_eq!(got, strings(&ok), "stored exactly as sent");
        let bad = [
            "",
            "/cb",
            "app.example.com/cb",
            "http://app.example.com/cb",
            "https://app.example.com/cb#frag",
            "https://app.example.com/a b",
            "ftp://app.example.com/",
            "com.example.app:/cb",
            "https://user:pw@app.example.com/cb",
            "http://127.0.0.2.example.com/cb",
        ];
        for b in bad {
            let mut v = Violations::default();
            redirect_uris(&mut v, "r", &strings(&["https://ok.example/", b]));
            assert_eq!(fields(&v), ["r[1]"], "{b}");
        }
        let long = format!("https://a.example/{}", "x".repeat(MAX_URI_LEN));
        let mut v = Violations::default();
        redirect_uris(&mut v, "r", &[long]);
        assert_eq!(fields(&v), ["r[0]"]);
        let mut v = Violations::default();
        redirect_uris(&mut v, "r", &vec!["https://a.example/".to_owned(); 21]);
        assert_eq!(fields(&v), ["r"]);
        let mut v = Violations::default();
        let dup = redirect_uris(&mut v, "r", &strings(&["https://a/", "https://a/"]));
        assert_eq!(dup.len(), 1);
    }

    #[test]
    fn grant_type_rules() {
        let mut v = Violations::default();
        let g = grant_types(
            &mut v,
            "g",
            &strings(&[
                AUTHORIZATION_CODE,
                "password",
                AUTHORIZATION_CODE,
                "implicit",
            ]),
        );
        assert_eq!(g, [AUTHORIZATION_CODE]);
        assert_eq!(fields(&v), ["g[1]", "g[3]"]);
        let mut v = Violations::default();
        grant_types(&mut v, "g", &[]);
        assert_eq!(fields(&v), ["g"]);
    }

    #[test]
    fn combinations() {
        let check = |t, uris, grants: &[&str], sa| {
            let mut v = Violations::default();
            check_combination(
                &mut v,
                "c",
                &Combination {
                    client_type: t,
                    redirect_uris: uris,
                    grant_types: grants,
                    has_service_account: sa,
                },
            );
            v.0.into_iter().map(|f| f.field).collect::<Vec<_>>()
        };
        use ClientType::*;
        assert!(check(Public, 1, &[AUTHORIZATION_CODE, REFRESH_TOKEN], false).is_empty());
        assert!(check(Confidential, 0, &[CLIENT_CREDENTIALS, TOKEN_EXCHANGE], true).is_empty());
        assert_eq!(
            check(
                Public,
                1,
                &[AUTHORIZATION_CODE, CLIENT_CREDENTIALS, TOKEN_EXCHANGE],
                true
            ),
            ["c.grant_types[1]", "c.grant_types[2]", "c.service_account"]
        );
        assert_eq!(
            check(Confidential, 0, &[AUTHORIZATION_CODE], false),
            ["c.redirect_uris"]
        );
        assert_eq!(
            check(Confidential, 0, &[CLIENT_CREDENTIALS, REFRESH_TOKEN], true),
            ["c.grant_types[1]"]
        );
        assert_eq!(
            check(Confidential, 0, &[CLIENT_CREDENTIALS], false),
            ["c.service_account"]
        );
    }

    #[test]
    fn audience_rules() {
        let mut v = Violations::default();
        let a = audiences(
            &mut v,
            "a",
            &strings(&[
                "https://billing.internal",
                "urn:acme:billing",
                "billing",
                "bad aud",
                "",
                ":nope",
                "billing",
            ]),
        );
        assert_eq!(
            a,
            ["https://billing.internal", "urn:acme:billing", "billing"]
        );
        assert_eq!(fields(&v), ["a[3]", "a[4]", "a[5]"]);
    }

    #[test]
    fn lifetimes_and_grace() {
        let d = |seconds| prost_types::Duration { seconds, nanos: 0 };
        let at = |v: Option<&prost_types::Duration>| {
            ttl(
                "t",
                v.cloned().as_ref(),
                DEFAULT_ACCESS_TOKEN_TTL,
                MIN_ACCESS_TOKEN_TTL,
                MAX_ACCESS_TOKEN_TTL,
            )
        };
        assert_eq!(at(None).unwrap(), 900);
        assert_eq!(at(Some(&d(60))).unwrap(), 60);
        assert_eq!(at(Some(&d(86_400))).unwrap(), 86_400);
        assert!(at(Some(&d(59))).is_err());
        assert!(at(Some(&d(86_401))).is_err());
        assert!(
            at(Some(&prost_types::Duration {
                seconds: 100,
                nanos: 5
            }))
            .is_err()
        );
        assert_eq!(secret_grace("g", None).unwrap(), 86_400_000_000);
        assert_eq!(secret_grace("g", Some(&d(0))).unwrap(), 0);
        assert_eq!(
            secret_grace("g", Some(&d(7 * 86_400))).unwrap(),
            7 * 86_400_000_000
        );
        assert!(secret_grace("g", Some(&d(7 * 86_400 + 1))).is_err());
        assert!(secret_grace("g", Some(&d(-1))).is_err());
    }

    #[test]
    fn algorithms() {
        assert_eq!(signing_algorithm("s", "").unwrap(), "EdDSA");
        assert_eq!(signing_algorithm("s", "RS256").unwrap(), "RS256");
        assert!(signing_algorithm("s", "HS256").is_err());
        assert!(signing_algorithm("s", "none").is_err());
    }

    #[test]
    fn secrets() {
        let m = mint_secret();
        let s = m.secret.expose();
        assert!(s.starts_with(SECRET_PREFIX));
        assert_eq!(s.len(), SECRET_PREFIX.len() + SECRET_LEN);
        assert!(
            s[SECRET_PREFIX.len()..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric())
        );
        assert!(PresentedSecret::new(s).matches(&m.digest));
        assert!(!PresentedSecret::new(&s[..s.len() - 1]).matches(&m.digest));
        assert!(!PresentedSecret::new(s).matches("zz"));
        assert_ne!(mint_secret().secret, m.secret);
        assert!(!format!("{m:?}").contains(s));
    }
}
