//! Roles, permissions and the decision whether a principal may call a
//! method on a resource. Roles are scoped to the principal's organization;
//! an `admin` of the `root` organization is a platform admin.

use std::fmt;

use super::{Error, FieldViolation, Result, names::PrincipalKind};

/// The organization created at first start; its admins run the platform.
pub const ROOT_ORG: &str = "root";

/// A role, ordered by power: a caller may grant or act upon only principals
/// whose highest role is at most its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Editor,
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role grants `permission` inside its organization.
    pub fn grants(self, permission: &str) -> bool {
        let Some((resource, verb)) = permission.split_once('.') else {
            return false;
        };
        // Creating and deleting tenants is the platform's business only.
        if resource == "organizations" && matches!(verb, "create" | "delete") {
            return false;
        }
        match self {
            Role::Viewer => matches!(verb, "get" | "list"),
            Role::Editor => {
                resource != "organizations"
                    && matches!(
                        verb,
                        "get" | "list" | "create" | "update" | "delete" | "revoke" | "setPassword"
                    )
                    || matches!(verb, "get" | "list")
            }
            Role::Admin => true,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every permission a method policy may name. The server refuses to start
/// when a proto names one that is not here, so roles always cover it.
pub const PERMISSIONS: &[&str] = &[
    "organizations.create",
    "organizations.get",
    "organizations.list",
    "organizations.update",
    "organizations.delete",
    "users.create",
    "users.get",
    "users.list",
    "users.update",
    "users.delete",
    "users.setPassword",
    "serviceAccounts.create",
    "serviceAccounts.get",
    "serviceAccounts.list",
    "serviceAccounts.update",
    "serviceAccounts.delete",
    "apiKeys.create",
    "apiKeys.get",
    "apiKeys.list",
    "apiKeys.revoke",
];

/// A de-duplicated, sorted set of roles, stored as `admin,viewer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles(Vec<Role>);

impl Roles {
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

    pub fn to_stored(&self) -> String {
        self.names().collect::<Vec<_>>().join(",")
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|r| r.as_str())
    }

    /// The most powerful role, if any.
    pub fn highest(&self) -> Option<Role> {
        self.0.last().copied()
    }

    pub fn contains(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    pub fn grants(&self, permission: &str) -> bool {
        self.0.iter().any(|r| r.grants(permission))
    }
}

/// An authenticated caller, as the authenticate layer resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub org: String,
    pub kind: PrincipalKind,
    pub id: String,
    pub roles: Roles,
}

impl Principal {
    /// `organizations/{org}/serviceAccounts/{id}` or `…/users/{id}`.
    pub fn name(&self) -> String {
        format!(
            "organizations/{}/{}/{}",
            self.org,
            self.kind.collection(),
            self.id
        )
    }

    /// An admin of the root organization may do anything anywhere.
    pub fn is_platform_admin(&self) -> bool {
        self.org == ROOT_ORG && self.roles.contains(Role::Admin)
    }

    /// The coarse check the authorize layer makes before the handler knows
    /// the target organization: could any organization let this caller
    /// use `permission`?
    pub fn may(&self, permission: &str) -> bool {
        self.is_platform_admin() || self.roles.grants(permission)
    }

    /// The full check: may this caller use `permission` on resources of
    /// organization `org`? Callers outside `org` learn nothing about it.
    pub fn authorize(&self, permission: &str, org: &str) -> Result<()> {
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

    fn principal(org: &str, roles: &[Role]) -> Principal {
        Principal {
            org: org.into(),
            kind: PrincipalKind::ServiceAccount,
            id: "p".into(),
            roles: Roles::new(roles.to_vec()),
        }
    }

    #[test]
    fn role_grants() {
        assert!(Role::Viewer.grants("users.get"));
        assert!(Role::Viewer.grants("organizations.list"));
        assert!(!Role::Viewer.grants("users.create"));
        assert!(Role::Editor.grants("users.create"));
        assert!(Role::Editor.grants("apiKeys.revoke"));
        assert!(!Role::Editor.grants("organizations.update"));
        assert!(Role::Admin.grants("organizations.update"));
        for role in Role::ALL {
            assert!(!role.grants("organizations.create"));
            assert!(!role.grants("organizations.delete"));
            assert!(!role.grants("nonsense"));
        }
        // Every known permission is granted to someone below platform level,
        // except tenant creation and deletion.
        for p in PERMISSIONS {
            let granted = Role::ALL.iter().any(|r| r.grants(p));
            assert_eq!(
                granted,
                !matches!(*p, "organizations.create" | "organizations.delete"),
                "{p}"
            );
        }
    }

    #[test]
    fn org_scoping_and_platform_admin() {
        let admin = principal("acme", &[Role::Admin]);
        assert!(admin.authorize("users.create", "acme").is_ok());
        assert!(matches!(
            admin.authorize("users.get", "other"),
            Err(Error::PermissionDenied(_))
        ));
        assert!(admin.authorize("organizations.create", "acme").is_err());

        let root = principal(ROOT_ORG, &[Role::Admin]);
        assert!(root.is_platform_admin());
        assert!(root.authorize("organizations.create", "anything").is_ok());
        assert!(!principal(ROOT_ORG, &[Role::Editor]).is_platform_admin());

        let viewer = principal("acme", &[Role::Viewer]);
        assert!(viewer.may("users.list"));
        assert!(!viewer.may("users.delete"));
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
