//! Roles, permissions and the decision whether a principal may call a
//! method on a resource. Roles are scoped to the principal's organization;
//! an `admin` of the `root` organization is a platform admin.

use std::fmt;

use super::{
    Error, FieldViolation, Result,
    names::{PrincipalKind, PrincipalName},
    scope::Scopes,
};

/// The organization created at first start; its admins run the platform.
pub const ROOT_ORG: &str = "root";

/// A role, ordered by power: a caller may grant or act upon only principals
/// whose highest role is at most its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// May read (get, list) everything in its organization.
    Viewer,
    /// May also write (create, update, delete, revoke, set passwords),
    /// except the organization's own settings.
    Editor,
    /// May do anything in its organization but create or delete it; in
    /// `root`, anything anywhere.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

    /// The role as requests and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    /// Reads [`Role::as_str`]'s spelling; `None` for an unknown role.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role grants `permission` inside its organization.
    /// The match is exhaustive over [`Verb`], so a new verb does not compile
    /// until someone decides which roles hold it.
    pub fn grants(self, permission: &Permission) -> bool {
        // Creating and deleting tenants is the platform's business only.
        if permission.is_tenant_lifecycle() {
            return false;
        }
        match (self, permission.verb) {
            (Role::Admin, _) => true,
            // Reading, and asking about credentials and access, which
            // reveals no more than reading does.
            (
                Role::Editor | Role::Viewer,
                Verb::Get | Verb::List | Verb::Watch | Verb::Introspect | Verb::Check,
            ) => true,
            // An organization's own settings are for its admins.
            (
                Role::Editor,
                Verb::Create
                | Verb::Update
                | Verb::Delete
                | Verb::Revoke
                | Verb::SetPassword
                | Verb::RotateSecret,
            ) => permission.collection.as_ref() != ORGANIZATIONS,
            (
                Role::Viewer,
                Verb::Create
                | Verb::Update
                | Verb::Delete
                | Verb::Revoke
                | Verb::SetPassword
                | Verb::RotateSecret,
            ) => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The collection of tenants; its lifecycle belongs to the platform.
const ORGANIZATIONS: &str = "organizations";

/// What a permission lets its holder do to a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Read one resource.
    Get,
    /// Read a collection.
    List,
    /// Follow a collection's changes (WatchEvents).
    Watch,
    /// Add a resource.
    Create,
    /// Change a resource.
    Update,
    /// Remove a resource.
    Delete,
    /// End a credential's life (API keys) without deleting its record.
    Revoke,
    /// Set a user's password.
    SetPassword,
    /// Give a credential a new secret (OAuth clients).
    RotateSecret,
    /// Describe a token (RFC 7662).
    Introspect,
    /// Ask whether a principal holds a permission (AuthorizationService).
    Check,
}

impl Verb {
    /// Every verb, in the order of the permission strings' documentation.
    pub const ALL: [Verb; 11] = [
        Verb::Get,
        Verb::List,
        Verb::Watch,
        Verb::Create,
        Verb::Update,
        Verb::Delete,
        Verb::Revoke,
        Verb::SetPassword,
        Verb::RotateSecret,
        Verb::Introspect,
        Verb::Check,
    ];

    /// The verb as the proto's permission strings spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Revoke => "revoke",
            Verb::SetPassword => "setPassword",
            Verb::RotateSecret => "rotateSecret",
            Verb::Introspect => "introspect",
            Verb::Check => "check",
        }
    }
}

/// A permission such as `users.create`, parsed once at start-up from a
/// method's `(tollgate.v1.policy)` option, so the per-call check compares
/// an enum instead of splitting strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permission {
    /// The resource collection, as in resource names (`users`, `apiKeys`).
    pub collection: Box<str>,
    /// What may be done to it.
    pub verb: Verb,
}

impl Permission {
    /// Parses `collection.verb`; `None` for anything else, so a typo in a
    /// proto stops the server instead of granting nothing (or everything).
    pub fn parse(s: &str) -> Option<Self> {
        let (collection, verb) = s.split_once('.')?;
        let well_formed = collection
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase())
            && collection.chars().all(|c| c.is_ascii_alphanumeric());
        if !well_formed {
            return None;
        }
        let verb = Verb::ALL.into_iter().find(|v| v.as_str() == verb)?;
        Some(Self {
            collection: collection.into(),
            verb,
        })
    }

    /// Creating or deleting an organization.
    fn is_tenant_lifecycle(&self) -> bool {
        self.collection.as_ref() == ORGANIZATIONS
            && matches!(self.verb, Verb::Create | Verb::Delete)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.collection, self.verb.as_str())
    }
}

/// A de-duplicated, sorted set of roles, stored as `admin,viewer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles(Vec<Role>);

impl Roles {
    /// Sorts and de-duplicates `roles`, so equal sets compare and store
    /// equal.
    pub fn new(mut roles: Vec<Role>) -> Self {
        roles.sort();
        roles.dedup();
        Roles(roles)
    }

    /// Parses the request's `roles` field, naming the bad entry.
    pub fn parse_request(field: &str, values: &[String]) -> Result<Self, FieldViolation> {
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            match Role::parse(v) {
                Some(r) => out.push(r),
                None => {
                    return Err(FieldViolation::new(
                        format!("{field}[{i}]"),
                        "unknown role; expected admin, editor or viewer",
                    ));
                }
            }
        }
        Ok(Roles::new(out))
    }

    /// Parses the stored form; unknown entries (from a newer version) are
    /// ignored rather than granting anything.
    pub fn from_stored(s: &str) -> Self {
        Roles::new(s.split(',').filter_map(Role::parse).collect())
    }

    /// The stored form, read back by [`Roles::from_stored`].
    pub fn to_stored(&self) -> String {
        self.names().collect::<Vec<_>>().join(",")
    }

    /// The roles as the API spells them, weakest first.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|r| r.as_str())
    }

    /// The roles, weakest first.
    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }

    /// The most powerful role, if any.
    pub fn highest(&self) -> Option<Role> {
        self.0.last().copied()
    }

    /// Whether `role` itself is held (not whether a stronger one is).
    pub fn contains(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    /// Whether any of these roles grants `permission`.
    pub fn grants(&self, permission: &Permission) -> bool {
        self.0.iter().any(|r| r.grants(permission))
    }
}

/// An authenticated caller, as the authenticate layer resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its organization; its roles hold there only.
    pub org: String,
    /// User or service account.
    pub kind: PrincipalKind,
    /// Its id within the organization.
    pub id: String,
    /// What it may do in `org`.
    pub roles: Roles,
    /// What the credential it presented may be used for: the roles grant
    /// only what these also cover.
    pub scopes: Scopes,
    /// The resource name, made once: every call logs it.
    name: Box<str>,
    /// The credential it presented, for rate-limit selectors and usage.
    pub credential: Credential,
}

/// The credential a principal presented.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Credential {
    /// None known: a principal made by the server itself.
    #[default]
    None,
    /// An API key, by resource name (`…/apiKeys/{key}`).
    ApiKey(Box<str>),
    /// An access token issued to this OAuth client (its resource name).
    OAuthClient(Box<str>),
}

impl Credential {
    /// The API key's resource name, if an API key.
    pub fn api_key(&self) -> Option<&str> {
        match self {
            Credential::ApiKey(name) => Some(name),
            _ => None,
        }
    }

    /// The OAuth client's resource name, if an access token.
    pub fn oauth_client(&self) -> Option<&str> {
        match self {
            Credential::OAuthClient(name) => Some(name),
            _ => None,
        }
    }

    /// The resource name of either, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Credential::None => None,
            Credential::ApiKey(name) | Credential::OAuthClient(name) => Some(name),
        }
    }
}

impl Principal {
    /// A principal of `org` with `roles`.
    pub fn new(org: String, kind: PrincipalKind, id: String, roles: Roles) -> Self {
        let name = format!("organizations/{org}/{}/{id}", kind.collection()).into();
        Self {
            org,
            kind,
            id,
            roles,
            scopes: Scopes::Unrestricted,
            name,
            credential: Credential::None,
        }
    }

    /// The same principal, known by the credential it presented.
    pub fn with_credential(mut self, credential: Credential) -> Self {
        self.credential = credential;
        self
    }

    /// The same principal, its credential narrowed to `scopes`.
    pub fn with_scopes(mut self, scopes: Scopes) -> Self {
        self.scopes = scopes;
        self
    }

    /// `organizations/{org}/serviceAccounts/{id}` or `…/users/{id}`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An admin of the root organization may do anything anywhere.
    pub fn is_platform_admin(&self) -> bool {
        self.org == ROOT_ORG && self.roles.contains(Role::Admin)
    }

    /// The coarse check the authorize layer makes before the handler knows
    /// the target organization: could any organization let this caller
    /// use `permission`?
    pub fn may(&self, permission: &Permission) -> Result<()> {
        self.check_scope(permission)?;
        if self.is_platform_admin() || self.roles.grants(permission) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{} lacks permission {permission}",
                self.name()
            )))
        }
    }

    /// Refuses a permission the credential's scopes do not cover, naming
    /// the scope it would need.
    fn check_scope(&self, permission: &Permission) -> Result<()> {
        if self.scopes.covers(permission) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "the credential lacks scope '{permission}' (or '{}.*')",
                permission.collection
            )))
        }
    }

    /// The full check: may this caller use `permission` on resources of
    /// organization `org`? Callers outside `org` learn nothing about it.
    pub fn authorize(&self, permission: &Permission, org: &str) -> Result<()> {
        // Scopes first: they narrow platform admins too.
        self.check_scope(permission)?;
        if self.is_platform_admin() {
            return Ok(());
        }
        if self.org != org {
            return Err(Error::PermissionDenied(format!(
                "{} has no access to organizations/{org}",
                self.name()
            )));
        }
        if self.roles.grants(permission) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{} lacks permission {permission}",
                self.name()
            )))
        }
    }

    /// Refuses to hand out scopes this caller's own credential does not
    /// hold (minting a key, registering an OAuth client): a narrowed
    /// credential must not mint a wider one.
    pub fn check_may_grant_scopes(&self, wanted: &[super::scope::Scope]) -> Result<()> {
        match wanted.iter().find(|s| !self.scopes.permits(s)) {
            Some(wider) => Err(Error::PermissionDenied(format!(
                "the credential cannot grant scope '{wider}' it does not hold"
            ))),
            None => Ok(()),
        }
    }

    /// The power this caller has in `org`, for grant checks.
    pub fn rank_in(&self, org: &str) -> Option<Role> {
        if self.is_platform_admin() {
            Some(Role::Admin)
        } else if self.org == org {
            self.roles.highest()
        } else {
            None
        }
    }

    /// The cap of a key this caller mints for `owner`: none for its own
    /// keys and for a platform admin's, else the caller's own rank in the
    /// owner's organization. A key minted for someone else must never grant
    /// more than its minter held, even after the owner is promoted.
    pub fn key_cap_for(&self, owner: &PrincipalName) -> Option<Role> {
        let own = self.org == owner.org && self.kind == owner.kind && self.id == owner.id;
        if own || self.is_platform_admin() {
            None
        } else {
            // Minting needs a role in the owner's organization, so this is
            // Some; `Viewer` is the safe floor were it not.
            Some(self.rank_in(&owner.org).unwrap_or(Role::Viewer))
        }
    }

    /// Refuses to grant roles, or act on a principal holding roles, above
    /// the caller's own: an editor must not mint an admin's keys.
    pub fn check_may_manage(&self, org: &str, target: &Roles, field: &str) -> Result<()> {
        let mine = self.rank_in(org);
        match target.highest() {
            Some(theirs) if Some(theirs) > mine => Err(Error::PermissionDenied(format!(
                "{} cannot manage a principal with role {theirs} ({field})",
                self.name()
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(s: &str) -> Permission {
        Permission::parse(s).unwrap()
    }

    fn principal(org: &str, roles: &[Role]) -> Principal {
        Principal::new(
            org.into(),
            PrincipalKind::ServiceAccount,
            "p".into(),
            Roles::new(roles.to_vec()),
        )
    }

    #[test]
    fn role_grants() {
        assert!(Role::Viewer.grants(&perm("users.get")));
        assert!(Role::Viewer.grants(&perm("organizations.list")));
        assert!(!Role::Viewer.grants(&perm("users.create")));
        assert!(Role::Editor.grants(&perm("users.create")));
        assert!(Role::Editor.grants(&perm("apiKeys.revoke")));
        assert!(!Role::Editor.grants(&perm("organizations.update")));
        assert!(Role::Admin.grants(&perm("organizations.update")));
        for role in Role::ALL {
            assert!(!role.grants(&perm("organizations.create")));
            assert!(!role.grants(&perm("organizations.delete")));
        }
        // Every verb on an ordinary collection is granted to admins, and
        // the reads to everyone.
        for verb in Verb::ALL {
            let p = Permission {
                collection: "widgets".into(),
                verb,
            };
            assert!(Role::Admin.grants(&p), "{p}");
            assert!(Role::Editor.grants(&p), "{p}");
            assert_eq!(
                Role::Viewer.grants(&p),
                matches!(
                    verb,
                    Verb::Get | Verb::List | Verb::Watch | Verb::Introspect | Verb::Check
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn permissions_parse_strictly() {
        let p = perm("serviceAccounts.setPassword");
        assert_eq!(p.collection.as_ref(), "serviceAccounts");
        assert_eq!(p.verb, Verb::SetPassword);
        assert_eq!(p.to_string(), "serviceAccounts.setPassword");
        for bad in [
            "nonsense",
            "users.",
            ".get",
            "users.Get",
            "users.setpassword",
            "Users.get",
            "users.get.extra",
            "us-ers.get",
        ] {
            assert!(Permission::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn org_scoping_and_platform_admin() {
        let admin = principal("acme", &[Role::Admin]);
        assert!(admin.authorize(&perm("users.create"), "acme").is_ok());
        assert!(matches!(
            admin.authorize(&perm("users.get"), "other"),
            Err(Error::PermissionDenied(_))
        ));
        assert!(
            admin
                .authorize(&perm("organizations.create"), "acme")
                .is_err()
        );

        let root = principal(ROOT_ORG, &[Role::Admin]);
        assert!(root.is_platform_admin());
        assert!(
            root.authorize(&perm("organizations.create"), "anything")
                .is_ok()
        );
        assert!(!principal(ROOT_ORG, &[Role::Editor]).is_platform_admin());

        let viewer = principal("acme", &[Role::Viewer]);
        assert!(viewer.may(&perm("users.list")).is_ok());
        assert!(viewer.may(&perm("users.delete")).is_err());
    }

    #[test]
    fn managing_stronger_principals_is_refused() {
        let editor = principal("acme", &[Role::Editor]);
        let admins = Roles::new(vec![Role::Admin]);
        let viewers = Roles::new(vec![Role::Viewer, Role::Editor]);
        assert!(editor.check_may_manage("acme", &admins, "roles").is_err());
        assert!(editor.check_may_manage("acme", &viewers, "roles").is_ok());
        assert!(editor.check_may_manage("other", &viewers, "roles").is_err());
    }

    #[test]
    fn roles_round_trip_and_reject_unknown() {
        let r = Roles::parse_request("roles", &["viewer".into(), "admin".into(), "viewer".into()])
            .unwrap();
        assert_eq!(r.to_stored(), "viewer,admin");
        assert_eq!(Roles::from_stored("viewer,admin"), r);
        let err =
            Roles::parse_request("user.roles", &["viewer".into(), "owner".into()]).unwrap_err();
        assert_eq!(err.field, "user.roles[1]");
        assert_eq!(Roles::from_stored("").highest(), None);
    }
}
