//! AIP-122 resource names and ids. Names are parsed once at the edge into
//! typed values, so nothing below the API sees a raw string path.

use super::FieldViolation;

/// The longest id segment (RFC 1034 label).
pub const MAX_ID_LEN: usize = 63;

/// Checks an id chosen by a caller: 1 to 63 characters of `[a-z0-9-]`,
/// starting with a letter, not ending with a hyphen.
pub fn validate_user_id(field: &str, id: &str) -> Result<(), FieldViolation> {
    let ok = id
        .as_bytes()
        .first()
        .is_some_and(|c| c.is_ascii_lowercase())
        && is_segment(id);
    if ok {
        Ok(())
    } else {
        Err(FieldViolation::new(
            field,
            "must be 1 to 63 characters of a-z, 0-9 and '-', start with a letter and not end with '-'",
        ))
    }
}

/// Whether `s` may be an id segment of a name: server-assigned ids (UUIDs)
/// may start with a digit, so parsing is a little wider than
/// [`validate_user_id`].
fn is_segment(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_ID_LEN
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `is_segment` as a regular expression, for documents that describe
/// names to clients (the OpenAPI path parameters). It sits next to the
/// function so that the two change together.
pub fn id_segment_pattern() -> String {
    format!("^[a-z0-9]([a-z0-9-]{{0,{}}}[a-z0-9])?$", MAX_ID_LEN - 2)
}

/// A server-assigned id: a UUIDv7, time-ordered so new rows land at the end
/// of the primary-key index.
pub fn generate_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Splits `name` by `/` and checks it against `collections` (the literal
/// segments); returns the id segments.
fn parse<'a, const N: usize>(
    field: &str,
    name: &'a str,
    collections: [&str; N],
    pattern: &str,
) -> Result<[&'a str; N], FieldViolation> {
    let bad = || {
        FieldViolation::new(
            field,
            if name.is_empty() {
                format!("required; expected {pattern}")
            } else {
                format!(
                    "'{}' is not a resource name of the form {pattern}",
                    truncate(name)
                )
            },
        )
    };
    let mut parts = Segments(Some(name));
    let mut ids = [""; N];
    for (i, collection) in collections.iter().enumerate() {
        let (Some(c), Some(id)) = (parts.next(), parts.next()) else {
            return Err(bad());
        };
        if c != *collection || !is_segment(id) {
            return Err(bad());
        }
        ids[i] = id;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(ids)
}

/// The `/`-separated segments of a name, as `name.split('/')` yields them.
/// Why not `split`: its char searcher costs about twice this byte scan on
/// a short name, and every call parses one.
struct Segments<'a>(Option<&'a str>);

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0?;
        match rest.bytes().position(|b| b == b'/') {
            // `/` is ASCII, so both sides are on char boundaries.
            Some(at) => {
                self.0 = rest.get(at + 1..);
                rest.get(..at)
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

/// Shortens what is echoed back of a bad input.
fn truncate(s: &str) -> String {
    if s.chars().count() > 80 {
        let mut t: String = s.chars().take(80).collect();
        t.push('…');
        t
    } else {
        s.to_owned()
    }
}

/// `organizations/{org}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrgName {
    /// The organization id.
    pub org: String,
}

impl OrgName {
    /// Parses `name`; a violation of `field` when it is not an
    /// organization's name.
    pub fn parse(field: &str, name: &str) -> Result<Self, FieldViolation> {
        Self::parse_id(field, name).map(|org| Self { org: org.into() })
    }

    /// [`OrgName::parse`] without making an `OrgName`: the organization id,
    /// borrowed from `name`, for a read that needs nothing more (no
    /// allocation on GetOrganization's path).
    pub fn parse_id<'a>(field: &str, name: &'a str) -> Result<&'a str, FieldViolation> {
        let [org] = parse(
            field,
            name,
            ["organizations"],
            "organizations/{organization}",
        )?;
        Ok(org)
    }
}

impl OrgName {
    /// The organization of any resource under it:
    /// `organizations/{org}` or `organizations/{org}/…`.
    pub fn of_resource(field: &str, name: &str) -> Result<Self, FieldViolation> {
        let org = name
            .strip_prefix("organizations/")
            .map(|rest| rest.split('/').next().unwrap_or(""))
            .filter(|org| is_segment(org))
            .ok_or_else(|| {
                FieldViolation::new(
                    field,
                    "must be an organization or a resource in one: organizations/{organization}[/…]",
                )
            })?;
        Ok(Self { org: org.into() })
    }
}

impl std::fmt::Display for OrgName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "organizations/{}", self.org)
    }
}

/// The two kinds of principal that can own API keys and hold roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// A person; the only kind that can have a password (`SetPassword`).
    User,
    /// A non-human caller (a service, a job, a CI pipeline).
    ServiceAccount,
}

impl PrincipalKind {
    /// The collection segment in resource names.
    pub fn collection(self) -> &'static str {
        match self {
            PrincipalKind::User => "users",
            PrincipalKind::ServiceAccount => "serviceAccounts",
        }
    }

    /// The stored `owner_kind` code.
    pub fn code(self) -> i16 {
        match self {
            PrincipalKind::User => 1,
            PrincipalKind::ServiceAccount => 2,
        }
    }

    /// Inverse of [`PrincipalKind::code`].
    pub fn from_code(code: i16) -> Option<Self> {
        match code {
            1 => Some(PrincipalKind::User),
            2 => Some(PrincipalKind::ServiceAccount),
            _ => None,
        }
    }
}

/// `organizations/{org}/users/{user}` or
/// `organizations/{org}/serviceAccounts/{sa}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrincipalName {
    /// The organization the principal belongs to.
    pub org: String,
    /// Which collection the principal is in.
    pub kind: PrincipalKind,
    /// The principal's id within its organization and kind.
    pub id: String,
}

impl PrincipalName {
    /// Parses a name of the given kind only.
    pub fn parse_kind(
        field: &str,
        name: &str,
        kind: PrincipalKind,
    ) -> Result<Self, FieldViolation> {
        let pattern = format!(
            "organizations/{{organization}}/{}/{{id}}",
            kind.collection()
        );
        let [org, id] = parse(field, name, ["organizations", kind.collection()], &pattern)?;
        Ok(Self {
            org: org.into(),
            kind,
            id: id.into(),
        })
    }

    /// Parses a user or service account name.
    pub fn parse_any(field: &str, name: &str) -> Result<Self, FieldViolation> {
        Self::parse_kind(field, name, PrincipalKind::ServiceAccount)
            .or_else(|_| Self::parse_kind(field, name, PrincipalKind::User))
            .map_err(|_| {
                FieldViolation::new(
                    field,
                    format!(
                        "'{}' is not of the form organizations/{{organization}}/serviceAccounts/{{id}} or organizations/{{organization}}/users/{{id}}",
                        truncate(name)
                    ),
                )
            })
    }
}

impl std::fmt::Display for PrincipalName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "organizations/{}/{}/{}",
            self.org,
            self.kind.collection(),
            self.id
        )
    }
}

/// `{principal}/apiKeys/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiKeyName {
    /// The user or service account the key authenticates as.
    pub owner: PrincipalName,
    /// The key id (the public part of the key).
    pub key: String,
}

impl ApiKeyName {
    /// Parses `name` under either kind of owner; a violation of `field`
    /// when it is not an API key's name.
    pub fn parse(field: &str, name: &str) -> Result<Self, FieldViolation> {
        let bad = || {
            FieldViolation::new(
                field,
                format!(
                    "'{}' is not of the form organizations/{{organization}}/serviceAccounts/{{id}}/apiKeys/{{key}} or organizations/{{organization}}/users/{{id}}/apiKeys/{{key}}",
                    truncate(name)
                ),
            )
        };
        let (owner, key) = name.rsplit_once("/apiKeys/").ok_or_else(bad)?;
        if !is_segment(key) {
            return Err(bad());
        }
        let owner = PrincipalName::parse_any(field, owner).map_err(|_| bad())?;
        Ok(Self {
            owner,
            key: key.into(),
        })
    }
}

impl std::fmt::Display for ApiKeyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/apiKeys/{}", self.owner, self.key)
    }
}

/// `organizations/{org}/clients/{client}`: an OAuth client, whose name is
/// also its OAuth `client_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientName {
    /// The organization the client belongs to.
    pub org: String,
    /// The client's id within its organization.
    pub client: String,
}

impl ClientName {
    /// Parses `name`; a violation of `field` when it is not a client's
    /// name.
    pub fn parse(field: &str, name: &str) -> Result<Self, FieldViolation> {
        let [org, client] = parse(
            field,
            name,
            ["organizations", "clients"],
            "organizations/{organization}/clients/{client}",
        )?;
        Ok(Self {
            org: org.into(),
            client: client.into(),
        })
    }
}

impl std::fmt::Display for ClientName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "organizations/{}/clients/{}", self.org, self.client)
    }
}

/// `organizations/{org}/rateLimitPolicies/{policy}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimitPolicyName {
    /// The organization the policy belongs to.
    pub org: String,
    /// The policy's id within its organization.
    pub policy: String,
}

impl RateLimitPolicyName {
    /// Parses `name`; a violation of `field` when it is not a rate-limit
    /// policy's name.
    pub fn parse(field: &str, name: &str) -> Result<Self, FieldViolation> {
        let [org, policy] = parse(
            field,
            name,
            ["organizations", "rateLimitPolicies"],
            "organizations/{organization}/rateLimitPolicies/{policy}",
        )?;
        Ok(Self {
            org: org.into(),
            policy: policy.into(),
        })
    }
}

impl std::fmt::Display for RateLimitPolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "organizations/{}/rateLimitPolicies/{}",
            self.org, self.policy
        )
    }
}

/// `organizations/{org}/webhooks/{webhook}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebhookName {
    /// The organization the webhook belongs to.
    pub org: String,
    /// The webhook's id within its organization.
    pub webhook: String,
}

impl WebhookName {
    /// Parses `name`; a violation of `field` when it is not a webhook's
    /// name.
    pub fn parse(field: &str, name: &str) -> Result<Self, FieldViolation> {
        let [org, webhook] = parse(
            field,
            name,
            ["organizations", "webhooks"],
            "organizations/{organization}/webhooks/{webhook}",
        )?;
        Ok(Self {
            org: org.into(),
            webhook: webhook.into(),
        })
    }
}

impl std::fmt::Display for WebhookName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "organizations/{}/webhooks/{}", self.org, self.webhook)
    }
}

/// `organizations/{org}/webhooks/{webhook}/deliveries/{event_id}`: a
/// delivery is named by the event it carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryName {
    /// The webhook.
    pub webhook: WebhookName,
    /// The event's id.
    pub event_id: i64,
}

impl DeliveryName {
    /// Parses `name`; a violation of `field` when it is not a delivery's
    /// name.
    pub fn parse(field: &str, name: &str) -> Result<Self, FieldViolation> {
        const PATTERN: &str =
            "organizations/{organization}/webhooks/{webhook}/deliveries/{delivery}";
        let [org, webhook, delivery] = parse(
            field,
            name,
            ["organizations", "webhooks", "deliveries"],
            PATTERN,
        )?;
        let event_id = delivery
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| {
                FieldViolation::new(
                    field,
                    format!(
                        "'{}' is not a delivery id (an event id)",
                        truncate(delivery)
                    ),
                )
            })?;
        Ok(Self {
            webhook: WebhookName {
                org: org.into(),
                webhook: webhook.into(),
            },
            event_id,
        })
    }
}

impl std::fmt::Display for DeliveryName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/deliveries/{}", self.webhook, self.event_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_those_of_split() {
        for name in [
            "",
            "/",
            "//",
            "a",
            "a/",
            "/a",
            "organizations/root",
            "organizations/root/",
            "organizations//users/x",
            "ü/ß/€",
        ] {
            let ours: Vec<&str> = Segments(Some(name)).collect();
            let std: Vec<&str> = name.split('/').collect();
            assert_eq!(ours, std, "{name:?}");
        }
    }

    #[test]
    fn parse_id_borrows_what_parse_owns() {
        assert_eq!(
            OrgName::parse_id("name", "organizations/root").ok(),
            Some("root")
        );
        assert!(OrgName::parse_id("name", "organizations/root/users/x").is_err());
        assert!(OrgName::parse_id("name", "organizations/").is_err());
        assert!(OrgName::parse_id("name", "").is_err());
    }

    #[test]
    fn delivery_names() {
        let d =
            DeliveryName::parse("name", "organizations/acme/webhooks/crm/deliveries/42").unwrap();
        assert_eq!(d.webhook.webhook, "crm");
        assert_eq!(d.event_id, 42);
        assert_eq!(
            d.to_string(),
            "organizations/acme/webhooks/crm/deliveries/42"
        );
        for bad in [
            "organizations/acme/webhooks/crm/deliveries/x",
            "organizations/acme/webhooks/crm/deliveries/0",
            "organizations/acme/webhooks/crm/deliveries/-1",
            "organizations/acme/webhooks/crm",
        ] {
            assert!(DeliveryName::parse("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_ids() {
        for ok in ["a", "acme", "a-b-c", "a1", &"a".repeat(63)] {
            assert!(validate_user_id("id", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "a/b",
            &"a".repeat(64),
            "é",
        ] {
            assert!(validate_user_id("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn org_names() {
        assert_eq!(
            OrgName::parse("name", "organizations/acme").unwrap().org,
            "acme"
        );
        let uuid = generate_id();
        assert!(OrgName::parse("name", &format!("organizations/{uuid}")).is_ok());
        for bad in [
            "",
            "organizations/",
            "organizations",
            "organization/acme",
            "organizations/acme/",
            "organizations/acme/users/x",
            "organizations/Acme",
            "/organizations/acme",
        ] {
            let err = OrgName::parse("name", bad).unwrap_err();
            assert_eq!(err.field, "name");
        }
    }

    #[test]
    fn principal_and_key_names() {
        let p = PrincipalName::parse_any("parent", "organizations/acme/users/bob").unwrap();
        assert_eq!(p.kind, PrincipalKind::User);
        assert_eq!(p.to_string(), "organizations/acme/users/bob");
        let sa =
            PrincipalName::parse_any("parent", "organizations/acme/serviceAccounts/ci").unwrap();
        assert_eq!(sa.kind, PrincipalKind::ServiceAccount);
        assert!(PrincipalName::parse_any("parent", "organizations/acme/groups/x").is_err());
        assert!(
            PrincipalName::parse_kind(
                "name",
                "organizations/acme/users/bob",
                PrincipalKind::ServiceAccount
            )
            .is_err()
        );

        let k =
            ApiKeyName::parse("name", "organizations/acme/serviceAccounts/ci/apiKeys/k1").unwrap();
        assert_eq!(k.key, "k1");
        assert_eq!(k.owner.id, "ci");
        assert_eq!(
            k.to_string(),
            "organizations/acme/serviceAccounts/ci/apiKeys/k1"
        );
        assert!(
            ApiKeyName::parse("name", "organizations/acme/serviceAccounts/ci/apiKeys/").is_err()
        );
        assert!(ApiKeyName::parse("name", "organizations/acme/apiKeys/k1").is_err());
    }

    #[test]
    fn rate_limit_policy_names() {
        let n =
            RateLimitPolicyName::parse("name", "organizations/acme/rateLimitPolicies/p1").unwrap();
        assert_eq!((n.org.as_str(), n.policy.as_str()), ("acme", "p1"));
        assert_eq!(n.to_string(), "organizations/acme/rateLimitPolicies/p1");
        for bad in [
            "organizations/acme/rateLimitPolicies",
            "organizations/acme/ratelimitpolicies/p1",
            "organizations/acme/clients/p1",
            "organizations/acme/rateLimitPolicies/P1",
        ] {
            assert_eq!(
                RateLimitPolicyName::parse("name", bad).unwrap_err().field,
                "name"
            );
        }
    }

    #[test]
    fn client_names() {
        let c = ClientName::parse("name", "organizations/acme/clients/web").unwrap();
        assert_eq!((c.org.as_str(), c.client.as_str()), ("acme", "web"));
        assert_eq!(c.to_string(), "organizations/acme/clients/web");
        for bad in [
            "web",
            "organizations/acme/clients/",
            "organizations/acme/clients/Web",
            "organizations/acme/serviceAccounts/web",
            "organizations/acme/clients/web/x",
        ] {
            assert!(ClientName::parse("name", bad).is_err(), "{bad}");
        }
    }
}
