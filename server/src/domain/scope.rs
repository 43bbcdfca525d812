//! Scopes: what a credential may be used for, narrowing what its
//! principal's roles grant. A call needs both a role that grants the
//! method's permission and a scope that covers it.
//!
//! Grammar (space-separated in OAuth requests and in storage):
//! - `*`: every permission;
//! - `users.*`: every verb on one collection;
//! - `users.get`: one permission, spelled as the protos spell it;
//! - `openid`, `profile`, `email`, `offline_access`: OpenID Connect's,
//!   which cover no permission.
//!
//! Access tokens are always narrowed by the scopes they carry. An API key
//! created without scopes is not narrowed (keys predate scopes, and an
//! owner may mint an all-powerful key for itself); one created with scopes
//! is.

use std::fmt;

use super::{FieldViolation, authz::Permission};

/// The OpenID Connect scopes, which ask for claims, not permissions.
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Longest scope string accepted, so a hostile request cannot make the
/// server store or sign a megabyte of scopes.
const MAX_SCOPE_LEN: usize = 100;

/// Most scopes in one set.
pub const MAX_SCOPES: usize = 50;

/// One scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `*`.
    All,
    /// `collection.*`.
    Collection(Box<str>),
    /// `collection.verb`.
    Permission(Permission),
    /// `openid`, `profile`, `email` or `offline_access`.
    Oidc(&'static str),
}

impl Scope {
    /// Parses one scope; `None` for anything outside the grammar, so a typo
    /// is refused instead of silently granting nothing.
    pub fn parse(s: &str) -> Option<Scope> {
        if s.len() > MAX_SCOPE_LEN {
            return None;
        }
        if s == "*" {
            return Some(Scope::All);
        }
        if let Some(oidc) = OIDC_SCOPES.into_iter().find(|o| *o == s) {
            return Some(Scope::Oidc(oidc));
        }
        if let Some(collection) = s.strip_suffix(".*") {
            return Permission::parse(&format!("{collection}.get"))
                .map(|p| Scope::Collection(p.collection));
        }
        Permission::parse(s).map(Scope::Permission)
    }

    /// Whether this scope covers `permission`.
    pub fn covers(&self, permission: &Permission) -> bool {
        match self {
            Scope::All => true,
            Scope::Collection(c) => *c == permission.collection,
            Scope::Permission(p) => p == permission,
            Scope::Oidc(_) => false,
        }
    }

    /// Whether every permission `other` covers, this one covers too: a
    /// narrower credential may be minted from a wider one, never the
    /// reverse.
    pub fn contains(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::All, Scope::Oidc(_)) => false,
            (Scope::All, _) => true,
            (Scope::Collection(c), Scope::Collection(d)) => c == d,
            (Scope::Collection(c), Scope::Permission(p)) => *c == p.collection,
            (Scope::Permission(p), Scope::Permission(q)) => p == q,
            (Scope::Oidc(a), Scope::Oidc(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("*"),
            Scope::Collection(c) => write!(f, "{c}.*"),
            Scope::Permission(p) => p.fmt(f),
            Scope::Oidc(o) => f.write_str(o),
        }
    }
}

/// What a credential may be used for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scopes {
    /// Not narrowed: an API key created without scopes.
    #[default]
    Unrestricted,
    /// Only what these cover (possibly nothing: an ID-only token).
    Only(Vec<Scope>),
}

impl Scopes {
    /// Parses a space-separated list, de-duplicated in order; the
    /// violation names `field` and the bad scope.
    pub fn parse(field: &str, s: &str) -> Result<Vec<Scope>, FieldViolation> {
        Self::parse_list(field, s.split(' ').filter(|s| !s.is_empty()))
    }

    /// Parses a list of scopes (a repeated request field), de-duplicated in
    /// order.
    pub fn parse_list<'a>(
        field: &str,
        items: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Scope>, FieldViolation> {
        let mut out: Vec<Scope> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            if out.len() >= MAX_SCOPES {
                return Err(FieldViolation::new(
                    field,
                    format!("at most {MAX_SCOPES} scopes"),
                ));
            }
            let Some(scope) = Scope::parse(item) else {
                return Err(FieldViolation::new(
                    format!("{field}[{i}]"),
                    format!(
                        "unknown scope '{}'; expected '*', 'collection.*', a permission such as 'users.get', or one of openid, profile, email, offline_access",
                        item.chars().take(MAX_SCOPE_LEN).collect::<String>()
                    ),
                ));
            };
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
        Ok(out)
    }

    /// Reads the stored form of an API key's scopes: empty is
    /// unrestricted. Unknown entries (from a newer version) are dropped,
    /// which narrows rather than widens.
    pub fn from_stored_key(s: &str) -> Scopes {
        if s.is_empty() {
            Scopes::Unrestricted
        } else {
            Scopes::Only(s.split(' ').filter_map(Scope::parse).collect())
        }
    }

    /// The stored (and OAuth wire) form: space-separated.
    pub fn join(scopes: &[Scope]) -> String {
        let mut out = String::new();
        for (i, s) in scopes.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&s.to_string());
        }
        out
    }

    /// Whether a call needing `permission` is within these scopes.
    pub fn covers(&self, permission: &Permission) -> bool {
        match self {
            Scopes::Unrestricted => true,
            Scopes::Only(scopes) => scopes.iter().any(|s| s.covers(permission)),
        }
    }

    /// Whether `wanted` is within these scopes (each wanted scope contained
    /// by one held): for minting narrower credentials.
    pub fn permits(&self, wanted: &Scope) -> bool {
        match self {
            Scopes::Unrestricted => true,
            Scopes::Only(held) => held.iter().any(|h| h.contains(wanted)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Permission {
        Permission::parse(s).unwrap()
    }

    #[test]
    fn grammar() {
        assert_eq!(Scope::parse("*"), Some(Scope::All));
        assert_eq!(
            Scope::parse("users.*"),
            Some(Scope::Collection("users".into()))
        );
        assert_eq!(
            Scope::parse("users.get"),
            Some(Scope::Permission(p("users.get")))
        );
        assert_eq!(Scope::parse("openid"), Some(Scope::Oidc("openid")));
        for bad in [
            "",
            "users",
            "users.fly",
            "Users.get",
            ".*",
            "a b",
            "*.get",
            "users.**",
        ] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
        assert_eq!(Scope::parse(&"a".repeat(200)), None);
    }

    #[test]
    fn coverage() {
        let only = Scopes::Only(Scopes::parse("scope", "openid users.* apiKeys.get").unwrap());
        assert!(only.covers(&p("users.create")));
        assert!(only.covers(&p("apiKeys.get")));
        assert!(!only.covers(&p("apiKeys.create")));
        assert!(!only.covers(&p("organizations.get")));
        assert!(Scopes::Unrestricted.covers(&p("organizations.delete")));
        assert!(!Scopes::Only(vec![Scope::Oidc("openid")]).covers(&p("users.get")));
        assert!(Scopes::Only(vec![Scope::All]).covers(&p("users.get")));
    }

    #[test]
    fn narrowing() {
        let held = Scopes::Only(Scopes::parse("s", "users.* openid").unwrap());
        assert!(held.permits(&Scope::parse("users.get").unwrap()));
        assert!(held.permits(&Scope::parse("users.*").unwrap()));
        assert!(held.permits(&Scope::parse("openid").unwrap()));
        assert!(!held.permits(&Scope::parse("*").unwrap()));
        assert!(!held.permits(&Scope::parse("apiKeys.get").unwrap()));
        assert!(!Scopes::Only(vec![Scope::All]).permits(&Scope::Oidc("email")));
    }

    #[test]
    fn parse_names_the_bad_entry_and_dedups() {
        let err = Scopes::parse("scope", "users.get bogus").unwrap_err();
        assert_eq!(err.field, "scope[1]");
        assert_eq!(
            Scopes::parse("scope", "users.get  users.get")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            Scopes::join(&Scopes::parse("s", "* users.get openid").unwrap()),
            "* users.get openid"
        );
        assert_eq!(Scopes::from_stored_key(""), Scopes::Unrestricted);
    }
}
