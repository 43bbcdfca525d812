//! The HTTP/JSON transcoding rules, one row per rule: an HTTP request in,
//! the gRPC request message the transcoder builds (or the error naming the
//! field), and a typed response message in, the JSON out.
//!
//! Every binding of `tollgate.v1` has a request row (a new binding without
//! one fails `every_binding_has_a_row`), and the test-only
//! `tollgate.testing.v1` protos supply the rules our protos do not use:
//! `response_body`, `**`, nested, repeated, 64-bit, wrapper, Timestamp,
//! Duration, FieldMask and enum query parameters, `body: "field"` with a
//! scalar and a repeated field, a `custom` binding, and the streaming
//! method. Pure logic: no server.

use std::{
    collections::BTreeSet,
    fmt::Debug,
    sync::{Arc, OnceLock},
};

use http::Method;
use prost::Message as _;
use prost_reflect::DescriptorPool;
use prost_types::{Duration, FieldMask, Timestamp};
use tollgate::tollgate::v1;
use tollgate_e2e::{TESTING_DESCRIPTOR_SET, testing_proto as t};
use tollgate_server::http::{
    routes::{Lookup, Route},
    transcode::{TranscodeError, Transcoder},
};

/// 2026-01-02T03:04:05Z.
const T0: i64 = 1_767_323_045;

fn transcoder(fds: &[u8], package: &str) -> Transcoder {
    let pool = DescriptorPool::decode(fds).unwrap();
    let services: Vec<_> = pool
        .services()
        .filter(|s| s.package_name() == package)
        .collect();
    Transcoder::new(&pool, &services).unwrap()
}

/// `tollgate.v1` and the test-only protos, compiled once.
fn transcoders() -> &'static [Transcoder; 2] {
    static BOTH: OnceLock<[Transcoder; 2]> = OnceLock::new();
    BOTH.get_or_init(|| {
        [
            transcoder(tollgate::FILE_DESCRIPTOR_SET, "tollgate.v1"),
            transcoder(TESTING_DESCRIPTOR_SET, "tollgate.testing.v1"),
        ]
    })
}

/// The route `verb target` finds in either transcoder, its captures and
/// its query string.
fn find<'t>(
    verb: &str,
    target: &'t str,
) -> (
    &'static Transcoder,
    Arc<Route>,
    Vec<String>,
    Option<&'t str>,
) {
    let verb = Method::from_bytes(verb.as_bytes()).unwrap();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    for tc in transcoders() {
        if let Lookup::Found(route, captures) = tc.find(&verb, path) {
            return (tc, route.clone(), captures, query);
        }
    }
    panic!("{verb} {target}: no route")
}

/// `Service/Method` of a route.
fn method(route: &Route) -> String {
    format!(
        "{}/{}",
        route.method.parent_service().name(),
        route.method.name()
    )
}

type Check = Box<dyn Fn(&[u8], &str) + Sync + Send>;

enum Expect {
    /// The request message, typed.
    Request(Check),
    /// An error naming `field`, its description containing `words`.
    Error {
        field: Option<&'static str>,
        words: &'static str,
    },
}

/// Expects the request `m`.
fn req<M>(m: M) -> Expect
where
    M: prost::Message + Default + PartialEq + Debug + Send + Sync + 'static,
{
    Expect::Request(Box::new(move |bytes, row| {
        let got = M::decode(bytes).unwrap_or_else(|e| panic!("{row}: {e}"));
        assert_eq!(got, m, "{row}");
    }))
}

fn err(field: &'static str, words: &'static str) -> Expect {
    Expect::Error {
        field: Some(field),
        words,
    }
}

fn err_no_field(words: &'static str) -> Expect {
    Expect::Error { field: None, words }
}

struct Row {
    verb: &'static str,
    target: &'static str,
    body: &'static str,
    method: &'static str,
    expect: Expect,
}

fn row(
    verb: &'static str,
    target: &'static str,
    body: &'static str,
    method: &'static str,
    expect: Expect,
) -> Row {
    Row {
        verb,
        target,
        body,
        method,
        expect,
    }
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn s(text: &str) -> String {
    text.to_owned()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| (*i).to_owned()).collect()
}

/// One row per binding of `tollgate.v1`, each also exercising a rule.
fn ours() -> Vec<Row> {
    let org = |name: &str| s(&format!("organizations/{name}"));
    vec![
        // --- OrganizationService
        row(
            "POST",
            "/v1/organizations?organizationId=acme",
            r#"{"displayName":"Acme","state":"ACTIVE"}"#,
            "OrganizationService/CreateOrganization",
            req(v1::CreateOrganizationRequest {
                organization: Some(v1::Organization {
                    display_name: s("Acme"),
                    state: v1::organization::State::Active as i32,
                    ..Default::default()
                }),
                organization_id: s("acme"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme",
            "",
            "OrganizationService/GetOrganization",
            req(v1::GetOrganizationRequest { name: org("acme") }),
        ),
        // Path segments are percent-decoded, but reserved characters stay
        // escaped: `%2F` adds no segment to the name.
        row(
            "GET",
            "/v1/organizations/a%2Fusers%2Fb%20c",
            "",
            "OrganizationService/GetOrganization",
            req(v1::GetOrganizationRequest {
                name: org("a%2Fusers%2Fb c"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations?pageSize=10&page_token=t%2B1&filter=state+%3D+ACTIVE",
            "",
            "OrganizationService/ListOrganizations",
            req(v1::ListOrganizationsRequest {
                page_size: 10,
                page_token: s("t+1"),
                filter: s("state = ACTIVE"),
            }),
        ),
        // The path wins over the body's `name`; the mask from the query
        // in JSON names becomes proto paths.
        row(
            "PATCH",
            "/v1/organizations/acme?updateMask=displayName,state",
            r#"{"name":"organizations/other","displayName":"New","etag":"e1"}"#,
            "OrganizationService/UpdateOrganization",
            req(v1::UpdateOrganizationRequest {
                organization: Some(v1::Organization {
                    name: org("acme"),
                    display_name: s("New"),
                    etag: s("e1"),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name", "state"]),
            }),
        ),
        row(
            "DELETE",
            "/v1/organizations/acme?etag=e1&force=true",
            "",
            "OrganizationService/DeleteOrganization",
            req(v1::DeleteOrganizationRequest {
                name: org("acme"),
                etag: s("e1"),
                force: true,
            }),
        ),
        // --- UserService
        row(
            "POST",
            "/v1/organizations/acme/users?user_id=bob",
            r#"{"display_name":"Bob","email":"bob@example.com","roles":["viewer","editor"]}"#,
            "UserService/CreateUser",
            req(v1::CreateUserRequest {
                parent: org("acme"),
                user: Some(v1::User {
                    display_name: s("Bob"),
                    email: s("bob@example.com"),
                    roles: strings(&["viewer", "editor"]),
                    ..Default::default()
                }),
                user_id: s("bob"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/users/bob",
            "",
            "UserService/GetUser",
            req(v1::GetUserRequest {
                name: s("organizations/acme/users/bob"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/users?pageSize=2&filter=email%3D%22b%40x%22",
            "",
            "UserService/ListUsers",
            req(v1::ListUsersRequest {
                parent: org("acme"),
                page_size: 2,
                page_token: String::new(),
                filter: s("email=\"b@x\""),
            }),
        ),
        row(
            "PATCH",
            "/v1/organizations/acme/users/bob?update_mask=roles&update_mask=display_name",
            r#"{"roles":[],"displayName":"Robert","state":"DISABLED"}"#,
            "UserService/UpdateUser",
            err("update_mask", "more than once"),
        ),
        row(
            "PATCH",
            "/v1/organizations/acme/users/bob?update_mask=roles,display_name",
            r#"{"roles":[],"displayName":"Robert","state":"DISABLED"}"#,
            "UserService/UpdateUser",
            req(v1::UpdateUserRequest {
                user: Some(v1::User {
                    name: s("organizations/acme/users/bob"),
                    display_name: s("Robert"),
                    state: v1::user::State::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["roles", "display_name"]),
            }),
        ),
        row(
            "DELETE",
            "/v1/organizations/acme/users/bob?etag=e2",
            "",
            "UserService/DeleteUser",
            req(v1::DeleteUserRequest {
                name: s("organizations/acme/users/bob"),
                etag: s("e2"),
            }),
        ),
        // A custom verb; `body: "*"`.
        row(
            "POST",
            "/v1/organizations/acme/users/bob:setPassword",
            r#"{"password":"correct horse"}"#,
            "UserService/SetPassword",
            req(v1::SetPasswordRequest {
                name: s("organizations/acme/users/bob"),
                password: s("correct horse"),
            }),
        ),
        // --- ServiceAccountService
        row(
            "POST",
            "/v1/organizations/acme/serviceAccounts?serviceAccountId=ci",
            r#"{"displayName":"CI","description":"builds","roles":["editor"]}"#,
            "ServiceAccountService/CreateServiceAccount",
            req(v1::CreateServiceAccountRequest {
                parent: org("acme"),
                service_account: Some(v1::ServiceAccount {
                    display_name: s("CI"),
                    description: s("builds"),
                    roles: strings(&["editor"]),
                    ..Default::default()
                }),
                service_account_id: s("ci"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/serviceAccounts/ci",
            "",
            "ServiceAccountService/GetServiceAccount",
            req(v1::GetServiceAccountRequest {
                name: s("organizations/acme/serviceAccounts/ci"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/serviceAccounts?page_size=1000&pageToken=abc",
            "",
            "ServiceAccountService/ListServiceAccounts",
            req(v1::ListServiceAccountsRequest {
                parent: org("acme"),
                page_size: 1000,
                page_token: s("abc"),
                filter: String::new(),
            }),
        ),
        // An empty body is an unset body field.
        row(
            "PATCH",
            "/v1/organizations/acme/serviceAccounts/ci?updateMask=description",
            "",
            "ServiceAccountService/UpdateServiceAccount",
            req(v1::UpdateServiceAccountRequest {
                service_account: Some(v1::ServiceAccount {
                    name: s("organizations/acme/serviceAccounts/ci"),
                    ..Default::default()
                }),
                update_mask: mask(&["description"]),
            }),
        ),
        row(
            "DELETE",
            "/v1/organizations/acme/serviceAccounts/ci",
            "",
            "ServiceAccountService/DeleteServiceAccount",
            req(v1::DeleteServiceAccountRequest {
                name: s("organizations/acme/serviceAccounts/ci"),
                etag: String::new(),
            }),
        ),
        // --- ApiKeyService: each binding and its additional binding.
        row(
            "POST",
            "/v1/organizations/acme/serviceAccounts/ci/apiKeys",
            r#"{"displayName":"deploy","expireTime":"2026-01-02T03:04:05Z"}"#,
            "ApiKeyService/CreateApiKey",
            req(v1::CreateApiKeyRequest {
                parent: s("organizations/acme/serviceAccounts/ci"),
                api_key: Some(v1::ApiKey {
                    display_name: s("deploy"),
                    expire_time: ts(T0),
                    ..Default::default()
                }),
            }),
        ),
        row(
            "POST",
            "/v1/organizations/acme/users/bob/apiKeys",
            r#"{"display_name":"laptop"}"#,
            "ApiKeyService/CreateApiKey",
            req(v1::CreateApiKeyRequest {
                parent: s("organizations/acme/users/bob"),
                api_key: Some(v1::ApiKey {
                    display_name: s("laptop"),
                    ..Default::default()
                }),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/serviceAccounts/ci/apiKeys/k1",
            "",
            "ApiKeyService/GetApiKey",
            req(v1::GetApiKeyRequest {
                name: s("organizations/acme/serviceAccounts/ci/apiKeys/k1"),
            }),
        ),
        // Percent-decoded path segments.
        row(
            "GET",
            "/v1/organizations/acme/users/b%20b/apiKeys/k1",
            "",
            "ApiKeyService/GetApiKey",
            req(v1::GetApiKeyRequest {
                name: s("organizations/acme/users/b b/apiKeys/k1"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/serviceAccounts/ci/apiKeys?pageSize=5",
            "",
            "ApiKeyService/ListApiKeys",
            req(v1::ListApiKeysRequest {
                parent: s("organizations/acme/serviceAccounts/ci"),
                page_size: 5,
                ..Default::default()
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/users/bob/apiKeys",
            "",
            "ApiKeyService/ListApiKeys",
            req(v1::ListApiKeysRequest {
                parent: s("organizations/acme/users/bob"),
                ..Default::default()
            }),
        ),
        row(
            "POST",
            "/v1/organizations/acme/serviceAccounts/ci/apiKeys/k1:revoke",
            r#"{"etag":"e3"}"#,
            "ApiKeyService/RevokeApiKey",
            req(v1::RevokeApiKeyRequest {
                name: s("organizations/acme/serviceAccounts/ci/apiKeys/k1"),
                etag: s("e3"),
            }),
        ),
        row(
            "POST",
            "/v1/organizations/acme/users/bob/apiKeys/k1:revoke",
            "",
            "ApiKeyService/RevokeApiKey",
            req(v1::RevokeApiKeyRequest {
                name: s("organizations/acme/users/bob/apiKeys/k1"),
                etag: String::new(),
            }),
        ),
        // --- OAuthClientService: enums by name, repeated strings,
        // Durations as JSON strings.
        row(
            "POST",
            "/v1/organizations/acme/clients?oauthClientId=web",
            r#"{"displayName":"Web","clientType":"PUBLIC","redirectUris":["https://app.example/cb"],"grantTypes":["authorization_code"],"accessTokenTtl":"600s"}"#,
            "OAuthClientService/CreateOAuthClient",
            req(v1::CreateOAuthClientRequest {
                parent: org("acme"),
                oauth_client: Some(v1::OAuthClient {
                    display_name: s("Web"),
                    client_type: v1::o_auth_client::ClientType::Public as i32,
                    redirect_uris: strings(&["https://app.example/cb"]),
                    grant_types: strings(&["authorization_code"]),
                    access_token_ttl: Some(Duration {
                        seconds: 600,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                oauth_client_id: s("web"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/clients/web",
            "",
            "OAuthClientService/GetOAuthClient",
            req(v1::GetOAuthClientRequest {
                name: s("organizations/acme/clients/web"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/clients?pageSize=3&filter=client_type%3DPUBLIC",
            "",
            "OAuthClientService/ListOAuthClients",
            req(v1::ListOAuthClientsRequest {
                parent: org("acme"),
                page_size: 3,
                page_token: String::new(),
                filter: s("client_type=PUBLIC"),
            }),
        ),
        row(
            "PATCH",
            "/v1/organizations/acme/clients/web?updateMask=scopes,state",
            r#"{"scopes":["openid","users.get"],"state":"DISABLED","etag":"e4"}"#,
            "OAuthClientService/UpdateOAuthClient",
            req(v1::UpdateOAuthClientRequest {
                oauth_client: Some(v1::OAuthClient {
                    name: s("organizations/acme/clients/web"),
                    scopes: strings(&["openid", "users.get"]),
                    state: v1::o_auth_client::State::Disabled as i32,
                    etag: s("e4"),
                    ..Default::default()
                }),
                update_mask: mask(&["scopes", "state"]),
            }),
        ),
        row(
            "DELETE",
            "/v1/organizations/acme/clients/web?etag=e5",
            "",
            "OAuthClientService/DeleteOAuthClient",
            req(v1::DeleteOAuthClientRequest {
                name: s("organizations/acme/clients/web"),
                etag: s("e5"),
            }),
        ),
        row(
            "POST",
            "/v1/organizations/acme/clients/svc:rotateSecret",
            r#"{"gracePeriod":"3600s"}"#,
            "OAuthClientService/RotateOAuthClientSecret",
            req(v1::RotateOAuthClientSecretRequest {
                name: s("organizations/acme/clients/svc"),
                grace_period: Some(Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                etag: String::new(),
            }),
        ),
        // --- WebhookService: a repeated string filter, a nested
        // collection's custom verb, a delivery list of a resource.
        row(
            "POST",
            "/v1/organizations/acme/webhooks?webhookId=crm",
            r#"{"displayName":"CRM","url":"https://crm.example/in","eventTypes":["user.*"]}"#,
            "WebhookService/CreateWebhook",
            req(v1::CreateWebhookRequest {
                parent: org("acme"),
                webhook: Some(v1::Webhook {
                    display_name: s("CRM"),
                    url: s("https://crm.example/in"),
                    event_types: strings(&["user.*"]),
                    ..Default::default()
                }),
                webhook_id: s("crm"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/webhooks/crm",
            "",
            "WebhookService/GetWebhook",
            req(v1::GetWebhookRequest {
                name: s("organizations/acme/webhooks/crm"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/webhooks?pageSize=2&filter=state%3DACTIVE",
            "",
            "WebhookService/ListWebhooks",
            req(v1::ListWebhooksRequest {
                parent: org("acme"),
                page_size: 2,
                page_token: String::new(),
                filter: s("state=ACTIVE"),
            }),
        ),
        row(
            "PATCH",
            "/v1/organizations/acme/webhooks/crm?updateMask=state",
            r#"{"state":"DISABLED"}"#,
            "WebhookService/UpdateWebhook",
            req(v1::UpdateWebhookRequest {
                webhook: Some(v1::Webhook {
                    name: s("organizations/acme/webhooks/crm"),
                    state: v1::webhook::State::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["state"]),
            }),
        ),
        row(
            "DELETE",
            "/v1/organizations/acme/webhooks/crm",
            "",
            "WebhookService/DeleteWebhook",
            req(v1::DeleteWebhookRequest {
                name: s("organizations/acme/webhooks/crm"),
                etag: String::new(),
            }),
        ),
        row(
            "POST",
            "/v1/organizations/acme/webhooks/crm:rotateSecret",
            r#"{"gracePeriod":"0s"}"#,
            "WebhookService/RotateWebhookSecret",
            req(v1::RotateWebhookSecretRequest {
                name: s("organizations/acme/webhooks/crm"),
                grace_period: Some(Duration {
                    seconds: 0,
                    nanos: 0,
                }),
                etag: String::new(),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/webhooks/crm/deliveries?filter=status%3DDEAD",
            "",
            "WebhookService/ListDeliveries",
            req(v1::ListDeliveriesRequest {
                parent: s("organizations/acme/webhooks/crm"),
                page_size: 0,
                page_token: String::new(),
                filter: s("status=DEAD"),
            }),
        ),
        row(
            "POST",
            "/v1/organizations/acme/webhooks/crm/deliveries/42:retry",
            "{}",
            "WebhookService/RetryDelivery",
            req(v1::RetryDeliveryRequest {
                name: s("organizations/acme/webhooks/crm/deliveries/42"),
            }),
        ),
        // --- TokenService and AuthorizationService: body "*" on custom
        // verbs of collections without a parent, a oneof by member name.
        row(
            "POST",
            "/v1/tokens:issue",
            r#"{"grantType":"client_credentials","clientId":"organizations/acme/clients/svc","scope":"users.*"}"#,
            "TokenService/IssueToken",
            req(v1::IssueTokenRequest {
                grant_type: s("client_credentials"),
                client_id: s("organizations/acme/clients/svc"),
                scope: s("users.*"),
                ..Default::default()
            }),
        ),
        row(
            "POST",
            "/v1/tokens:introspect",
            r#"{"token":"t","tokenTypeHint":"access_token"}"#,
            "TokenService/IntrospectToken",
            req(v1::IntrospectTokenRequest {
                token: s("t"),
                token_type_hint: s("access_token"),
            }),
        ),
        row(
            "POST",
            "/v1/tokens:revoke",
            r#"{"token":"t","clientId":"c"}"#,
            "TokenService/RevokeToken",
            req(v1::RevokeTokenRequest {
                token: s("t"),
                client_id: s("c"),
                ..Default::default()
            }),
        ),
        row(
            "GET",
            "/v1/signingKeys?showRetired=true",
            "",
            "TokenService/ListSigningKeys",
            req(v1::ListSigningKeysRequest { show_retired: true }),
        ),
        row(
            "POST",
            "/v1/signingKeys:rotate",
            r#"{"algorithm":"ES256","immediate":true}"#,
            "TokenService/RotateSigningKey",
            req(v1::RotateSigningKeyRequest {
                algorithm: s("ES256"),
                immediate: true,
            }),
        ),
        row(
            "POST",
            "/v1/authorization:check",
            r#"{"principal":"organizations/acme/users/bob","permission":"users.get","resource":"organizations/acme"}"#,
            "AuthorizationService/Check",
            req(v1::CheckRequest {
                subject: Some(v1::check_request::Subject::Principal(s(
                    "organizations/acme/users/bob",
                ))),
                permission: s("users.get"),
                resource: s("organizations/acme"),
            }),
        ),
        row(
            "POST",
            "/v1/authorization:batchCheck",
            r#"{"checks":[{"token":"tg_x","permission":"users.get","resource":"organizations/acme"}]}"#,
            "AuthorizationService/BatchCheck",
            req(v1::BatchCheckRequest {
                checks: vec![v1::CheckRequest {
                    subject: Some(v1::check_request::Subject::Token(s("tg_x"))),
                    permission: s("users.get"),
                    resource: s("organizations/acme"),
                }],
            }),
        ),
        // --- RateLimitPolicyService: maps, proto3 `optional` int64 as a
        // string or a number, nested enums by name.
        row(
            "POST",
            "/v1/organizations/acme/rateLimitPolicies?rateLimitPolicyId=users",
            r#"{"selector":{"method":"/tollgate.v1.UserService/*","headers":{"x-tenant":""}},"limit":{"limit":"10","period":"SECOND","burst":20},"quota":{"limit":1000,"period":"MONTH"},"keyBy":"DESCRIPTOR","shadow":true}"#,
            "RateLimitPolicyService/CreateRateLimitPolicy",
            req(v1::CreateRateLimitPolicyRequest {
                parent: org("acme"),
                rate_limit_policy: Some(v1::RateLimitPolicy {
                    selector: Some(v1::RateLimitSelector {
                        method: s("/tollgate.v1.UserService/*"),
                        headers: [(s("x-tenant"), String::new())].into(),
                        ..Default::default()
                    }),
                    limit: Some(v1::RateLimit {
                        limit: 10,
                        period: v1::rate_limit::Period::Second as i32,
                        burst: Some(20),
                    }),
                    quota: Some(v1::RateLimitQuota {
                        limit: 1000,
                        period: v1::rate_limit_quota::Period::Month as i32,
                    }),
                    key_by: v1::rate_limit_policy::KeyBy::Descriptor as i32,
                    shadow: true,
                    ..Default::default()
                }),
                rate_limit_policy_id: s("users"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/rateLimitPolicies/users",
            "",
            "RateLimitPolicyService/GetRateLimitPolicy",
            req(v1::GetRateLimitPolicyRequest {
                name: s("organizations/acme/rateLimitPolicies/users"),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/rateLimitPolicies?pageSize=5&pageToken=t1",
            "",
            "RateLimitPolicyService/ListRateLimitPolicies",
            req(v1::ListRateLimitPoliciesRequest {
                parent: org("acme"),
                page_size: 5,
                page_token: s("t1"),
            }),
        ),
        row(
            "PATCH",
            "/v1/organizations/acme/rateLimitPolicies/users?updateMask=limit,failureMode",
            r#"{"limit":{"limit":5,"period":"MINUTE"},"failureMode":"FAIL_CLOSED","etag":"e6"}"#,
            "RateLimitPolicyService/UpdateRateLimitPolicy",
            req(v1::UpdateRateLimitPolicyRequest {
                rate_limit_policy: Some(v1::RateLimitPolicy {
                    name: s("organizations/acme/rateLimitPolicies/users"),
                    limit: Some(v1::RateLimit {
                        limit: 5,
                        period: v1::rate_limit::Period::Minute as i32,
                        burst: None,
                    }),
                    failure_mode: v1::rate_limit_policy::FailureMode::FailClosed as i32,
                    etag: s("e6"),
                    ..Default::default()
                }),
                update_mask: mask(&["limit", "failure_mode"]),
            }),
        ),
        row(
            "DELETE",
            "/v1/organizations/acme/rateLimitPolicies/users?etag=e7",
            "",
            "RateLimitPolicyService/DeleteRateLimitPolicy",
            req(v1::DeleteRateLimitPolicyRequest {
                name: s("organizations/acme/rateLimitPolicies/users"),
                etag: s("e7"),
            }),
        ),
        // --- RateLimitService and UsageService (declared, served later):
        // repeated messages in a `*` body, Timestamps in the query.
        row(
            "POST",
            "/v1/organizations/acme/rateLimits:check",
            r#"{"descriptors":[{"entries":[{"key":"path","value":"/x"}]}],"hitsAddend":2,"dryRun":true}"#,
            "RateLimitService/CheckRateLimit",
            req(v1::CheckRateLimitRequest {
                parent: org("acme"),
                descriptors: vec![v1::RateLimitDescriptor {
                    entries: vec![v1::rate_limit_descriptor::Entry {
                        key: s("path"),
                        value: s("/x"),
                    }],
                }],
                hits_addend: 2,
                dry_run: true,
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/usage?startTime=2026-01-02T03:04:05Z&granularity=minute&method=/tollgate.v1.UserService/GetUser",
            "",
            "UsageService/GetUsage",
            req(v1::GetUsageRequest {
                parent: org("acme"),
                start_time: ts(T0),
                granularity: s("minute"),
                method: s("/tollgate.v1.UserService/GetUser"),
                ..Default::default()
            }),
        ),
        // --- EventService: a filter with spaces and quotes in the query.
        row(
            "GET",
            "/v1/organizations/acme/events?pageSize=2&pageToken=t1&filter=type%20%3D%20%22apiKey.revoked%22",
            "",
            "EventService/ListEvents",
            req(v1::ListEventsRequest {
                parent: org("acme"),
                page_size: 2,
                page_token: s("t1"),
                filter: s("type = \"apiKey.revoked\""),
            }),
        ),
        row(
            "GET",
            "/v1/organizations/acme/events:watch?cursor=42&filter=actor%20%3D%20%22system%22",
            "",
            "EventService/WatchEvents",
            req(v1::WatchEventsRequest {
                parent: org("acme"),
                filter: s("actor = \"system\""),
                cursor: s("42"),
            }),
        ),
    ]
}

/// The rules `tollgate.v1` does not use, on the test-only protos.
fn testing() -> Vec<Row> {
    use t::thing::Color;
    let search = |r: t::SearchThingsRequest| req(r);
    vec![
        // `**`: the rest of the path, slashes included, or nothing.
        row(
            "GET",
            "/v1/files/a/b/c.txt",
            "",
            "TranscodeTestService/GetFile",
            req(t::GetFileRequest {
                path: s("files/a/b/c.txt"),
            }),
        ),
        row(
            "GET",
            "/v1/files",
            "",
            "TranscodeTestService/GetFile",
            req(t::GetFileRequest { path: s("files") }),
        ),
        // Nested query fields, in proto and JSON names.
        row(
            "GET",
            "/v1/things:search?filter.owner.name=ann&filter.owner.emailAddress=ann%40example.com&filter.owner.email_address=x",
            "",
            "TranscodeTestService/SearchThings",
            err("filter.owner.email_address", "more than once"),
        ),
        row(
            "GET",
            "/v1/things:search?filter.owner.name=ann&filter.owner.emailAddress=ann%40example.com",
            "",
            "TranscodeTestService/SearchThings",
            search(t::SearchThingsRequest {
                filter: Some(t::Filter {
                    owner: Some(t::Owner {
                        name: s("ann"),
                        email_address: s("ann@example.com"),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        ),
        // Repeated query fields: repeat the parameter.
        row(
            "GET",
            "/v1/things:search?ids=1&ids=2&ids=-3&filter.tags=a&filter.tags=b",
            "",
            "TranscodeTestService/SearchThings",
            search(t::SearchThingsRequest {
                ids: vec![1, 2, -3],
                filter: Some(t::Filter {
                    tags: strings(&["a", "b"]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        ),
        // 64-bit integers at their limits.
        row(
            "GET",
            "/v1/things:search?minSize=-9223372036854775808&max_views=18446744073709551615",
            "",
            "TranscodeTestService/SearchThings",
            search(t::SearchThingsRequest {
                min_size: i64::MIN,
                max_views: u64::MAX,
                ..Default::default()
            }),
        ),
        // Wrappers from their plain values.
        row(
            "GET",
            "/v1/things:search?quota=0&archived=false&nickname=",
            "",
            "TranscodeTestService/SearchThings",
            search(t::SearchThingsRequest {
                quota: Some(0),
                archived: Some(false),
                nickname: Some(String::new()),
                ..Default::default()
            }),
        ),
        // Timestamp (RFC 3339, any offset), Duration, FieldMask.
        row(
            "GET",
            "/v1/things:search?filter.createdAfter=2026-01-02T05:04:05.25%2B02:00&filter.max_age=1.5s&readMask=displayName,filter.owner,create_time",
            "",
            "TranscodeTestService/SearchThings",
            search(t::SearchThingsRequest {
                filter: Some(t::Filter {
                    created_after: Some(Timestamp {
                        seconds: T0,
                        nanos: 250_000_000,
                    }),
                    max_age: Some(Duration {
                        seconds: 1,
                        nanos: 500_000_000,
                    }),
                    ..Default::default()
                }),
                read_mask: mask(&["display_name", "filter.owner", "create_time"]),
                ..Default::default()
            }),
        ),
        // Enums by name or number, singular and repeated; bools, doubles,
        // URL-safe base64 bytes.
        row(
            "GET",
            "/v1/things:search?filter.color=GREEN&colors=RED&colors=2&exact=true&score=-2.5e3&token=-_8",
            "",
            "TranscodeTestService/SearchThings",
            search(t::SearchThingsRequest {
                filter: Some(t::Filter {
                    color: Color::Green as i32,
                    ..Default::default()
                }),
                colors: vec![Color::Red as i32, Color::Green as i32],
                exact: true,
                score: -2500.0,
                token: vec![0xfb, 0xff],
                ..Default::default()
            }),
        ),
        // A recursive message, within the depth bound.
        row(
            "GET",
            "/v1/things:search?tree.child.child.name=deep",
            "",
            "TranscodeTestService/SearchThings",
            search(t::SearchThingsRequest {
                tree: Some(t::Node {
                    name: String::new(),
                    child: Some(Box::new(t::Node {
                        name: String::new(),
                        child: Some(Box::new(t::Node {
                            name: s("deep"),
                            child: None,
                        })),
                    })),
                }),
                ..Default::default()
            }),
        ),
        row(
            "GET",
            "/v1/things:search?tree.child.child.child.child.child.child.child.name=too+deep",
            "",
            "TranscodeTestService/SearchThings",
            err(
                "tree.child.child.child.child.child.child.child.name",
                "too deep",
            ),
        ),
        // `response_body` changes only the response.
        row(
            "GET",
            "/v1/things/t1/tags",
            "",
            "TranscodeTestService/ListThingTags",
            req(t::GetThingRequest {
                name: s("things/t1"),
            }),
        ),
        // `body: "field"` with a scalar field; the rest from the query.
        row(
            "POST",
            "/v1/things/t1:rename?dryRun=true",
            r#""New name""#,
            "TranscodeTestService/RenameThing",
            req(t::RenameThingRequest {
                name: s("things/t1"),
                display_name: s("New name"),
                dry_run: true,
            }),
        ),
        row(
            "POST",
            "/v1/things/t1:rename",
            "42",
            "TranscodeTestService/RenameThing",
            err("displayName", "invalid type"),
        ),
        row(
            "POST",
            "/v1/things/t1:rename?display_name=x",
            "",
            "TranscodeTestService/RenameThing",
            err("display_name", "body"),
        ),
        // `body: "field"` with a repeated field.
        row(
            "POST",
            "/v1/things/t1:tag?replace=true",
            r#"["red","round"]"#,
            "TranscodeTestService/TagThing",
            req(t::TagThingRequest {
                name: s("things/t1"),
                tags: strings(&["red", "round"]),
                replace: true,
            }),
        ),
        row(
            "POST",
            "/v1/things/t1:tag",
            r#"["red",7]"#,
            "TranscodeTestService/TagThing",
            err("tags[1]", "invalid type"),
        ),
        // A `custom` binding (HTTP method SEARCH).
        row(
            "SEARCH",
            "/v1/things/t1",
            "",
            "TranscodeTestService/DescribeThing",
            req(t::GetThingRequest {
                name: s("things/t1"),
            }),
        ),
        // An int64 path variable, parsed.
        row(
            "GET",
            "/v1/counters/-42",
            "",
            "TranscodeTestService/GetCounter",
            req(t::GetCounterRequest { id: -42 }),
        ),
        row(
            "GET",
            "/v1/counters/forty-two",
            "",
            "TranscodeTestService/GetCounter",
            err("id", "64-bit integer"),
        ),
        // `body: "*"`: wrappers, Duration, Struct, Value, Empty and a map
        // in JSON; int64 as a string or a number; the path wins over the
        // body's `id`.
        row(
            "PUT",
            "/v1/counters/7",
            r#"{"id":"99","limit":"100","ratio":0.5,"window":"30s","labels":{"a":1,"b":[true,null]},"extra":"x","reset":{},"per_key":{"k":3}}"#,
            "TranscodeTestService/PutCounter",
            req(t::Counter {
                id: 7,
                limit: Some(100),
                ratio: Some(0.5),
                window: Some(Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                labels: Some(prost_types::Struct {
                    fields: [
                        (s("a"), number(1.0)),
                        (
                            s("b"),
                            prost_types::Value {
                                kind: Some(prost_types::value::Kind::ListValue(
                                    prost_types::ListValue {
                                        values: vec![
                                            prost_types::Value {
                                                kind: Some(prost_types::value::Kind::BoolValue(
                                                    true,
                                                )),
                                            },
                                            prost_types::Value {
                                                kind: Some(prost_types::value::Kind::NullValue(0)),
                                            },
                                        ],
                                    },
                                )),
                            },
                        ),
                    ]
                    .into(),
                }),
                extra: Some(prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(s("x"))),
                }),
                reset: Some(()),
                per_key: [(s("k"), 3)].into(),
            }),
        ),
        row(
            "PUT",
            "/v1/counters/7",
            r#"{"limit":"9223372036854775808"}"#,
            "TranscodeTestService/PutCounter",
            err("limit", ""),
        ),
        // The streaming method's request.
        row(
            "GET",
            "/v1/shelves/s1/things:watch?count=3&fail=true",
            "",
            "TranscodeTestService/WatchThings",
            req(t::WatchThingsRequest {
                parent: s("shelves/s1"),
                count: 3,
                fail: true,
            }),
        ),
    ]
}

fn number(n: f64) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::NumberValue(n)),
    }
}

/// What the client gets wrong, and the field each error names.
fn errors() -> Vec<Row> {
    vec![
        // An unknown JSON field, in the body field and in a `*` body.
        row(
            "POST",
            "/v1/organizations",
            r#"{"displayName":"Acme","colour":"red"}"#,
            "OrganizationService/CreateOrganization",
            err("organization.colour", "colour"),
        ),
        row(
            "POST",
            "/v1/organizations/acme/users/bob:setPassword",
            r#"{"password":"x","passwrd":"y"}"#,
            "UserService/SetPassword",
            err("passwrd", "passwrd"),
        ),
        // A JSON value of the wrong type, named down to the list index.
        row(
            "POST",
            "/v1/organizations/acme/users",
            r#"{"displayName":"B","roles":"admin"}"#,
            "UserService/CreateUser",
            err("user.roles", "invalid type"),
        ),
        row(
            "POST",
            "/v1/organizations/acme/users",
            r#"{"displayName":"B","roles":["admin",1]}"#,
            "UserService/CreateUser",
            err("user.roles[1]", "invalid type"),
        ),
        // A bad enum name in JSON, and in the query.
        row(
            "POST",
            "/v1/organizations",
            r#"{"state":"ASLEEP"}"#,
            "OrganizationService/CreateOrganization",
            err("organization.state", "ASLEEP"),
        ),
        row(
            "GET",
            "/v1/things:search?filter.color=PURPLE",
            "",
            "TranscodeTestService/SearchThings",
            err("filter.color", "PURPLE"),
        ),
        // Malformed JSON names no field.
        row(
            "POST",
            "/v1/organizations",
            r#"{"displayName":"#,
            "OrganizationService/CreateOrganization",
            err_no_field("EOF"),
        ),
        // A body where the binding takes none.
        row(
            "DELETE",
            "/v1/organizations/acme",
            r#"{"force":true}"#,
            "OrganizationService/DeleteOrganization",
            err_no_field("no request body"),
        ),
        // Unknown query parameters, and fields the path or the body sets.
        row(
            "GET",
            "/v1/organizations?pageSzie=1",
            "",
            "OrganizationService/ListOrganizations",
            err("pageSzie", "no such field"),
        ),
        row(
            "GET",
            "/v1/organizations/acme?name=organizations/beta",
            "",
            "OrganizationService/GetOrganization",
            err("name", "path"),
        ),
        row(
            "POST",
            "/v1/organizations/acme/users/bob:setPassword?password=x",
            r#"{"password":"y"}"#,
            "UserService/SetPassword",
            err("password", "body"),
        ),
        row(
            "POST",
            "/v1/organizations?organization.displayName=x",
            "",
            "OrganizationService/CreateOrganization",
            err("organization.displayName", "body"),
        ),
        // Values that do not parse.
        row(
            "GET",
            "/v1/organizations?pageSize=ten",
            "",
            "OrganizationService/ListOrganizations",
            err("pageSize", "integer"),
        ),
        row(
            "GET",
            "/v1/organizations?pageSize=1&page_size=2",
            "",
            "OrganizationService/ListOrganizations",
            err("page_size", "more than once"),
        ),
        row(
            "DELETE",
            "/v1/organizations/acme?force=yes",
            "",
            "OrganizationService/DeleteOrganization",
            err("force", "true or false"),
        ),
        row(
            "GET",
            "/v1/things:search?filter.createdAfter=yesterday",
            "",
            "TranscodeTestService/SearchThings",
            err("filter.createdAfter", ""),
        ),
        row(
            "GET",
            "/v1/things:search?filter.maxAge=5m",
            "",
            "TranscodeTestService/SearchThings",
            err("filter.maxAge", ""),
        ),
        row(
            "GET",
            "/v1/things:search?token=***",
            "",
            "TranscodeTestService/SearchThings",
            err("token", "base64"),
        ),
        row(
            "GET",
            "/v1/things:search?filter=x",
            "",
            "TranscodeTestService/SearchThings",
            err("filter", "filter.<field>"),
        ),
        // Broken escapes and bytes that are not UTF-8.
        row(
            "GET",
            "/v1/organizations?filter=%zz",
            "",
            "OrganizationService/ListOrganizations",
            err("filter", "percent-escape"),
        ),
        row(
            "GET",
            "/v1/organizations?filter=%C3%28",
            "",
            "OrganizationService/ListOrganizations",
            err("filter", "UTF-8"),
        ),
        row(
            "GET",
            "/v1/organizations?fil%ter=x",
            "",
            "OrganizationService/ListOrganizations",
            err("fil%ter", "percent-escape"),
        ),
    ]
}

/// Bad, huge and deep input: refused or taken in bounded work, never a
/// stack overflow or a panic.
fn hostile() -> Vec<Row> {
    let leak = |s: String| -> &'static str { s.leak() };
    let deep_list = leak(format!(
        r#"{{"extra":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    ));
    let deep_struct = leak(format!(
        r#"{{"labels":{}1{}}}"#,
        r#"{"a":"#.repeat(5_000),
        "}".repeat(5_000)
    ));
    let long_name = leak(format!(
        "/v1/things:search?tree{}.name=x",
        ".child".repeat(10_000)
    ));
    let many_values = leak(format!(
        "/v1/things:search?{}ids=0",
        "ids=1&".repeat(10_000)
    ));
    vec![
        row(
            "PUT",
            "/v1/counters/1",
            deep_list,
            "TranscodeTestService/PutCounter",
            err_no_field("recursion limit"),
        ),
        row(
            "PUT",
            "/v1/counters/1",
            deep_struct,
            "TranscodeTestService/PutCounter",
            err_no_field("recursion limit"),
        ),
        row(
            "PUT",
            "/v1/counters/1",
            r#"{"ratio":1e400}"#,
            "TranscodeTestService/PutCounter",
            err_no_field("out of range"),
        ),
        row(
            "PUT",
            "/v1/counters/1",
            r#"{"id":"1","id":"2","limit":"99999999999999999999999"}"#,
            "TranscodeTestService/PutCounter",
            err("limit", ""),
        ),
        row(
            "PUT",
            "/v1/counters/1",
            "\u{feff}{}",
            "TranscodeTestService/PutCounter",
            err_no_field(""),
        ),
        row(
            "GET",
            long_name,
            "",
            "TranscodeTestService/SearchThings",
            err(
                long_name
                    .strip_prefix("/v1/things:search?")
                    .and_then(|q| q.strip_suffix("=x"))
                    .unwrap(),
                "too deep",
            ),
        ),
        row(
            "GET",
            many_values,
            "",
            "TranscodeTestService/SearchThings",
            Expect::Request(Box::new(|bytes, row| {
                let got = t::SearchThingsRequest::decode(bytes).unwrap();
                assert_eq!(got.ids.len(), 10_001, "{row}");
            })),
        ),
    ]
}

fn check(rows: &[Row]) -> BTreeSet<(String, String)> {
    let mut covered = BTreeSet::new();
    for r in rows {
        // Hostile rows are long: name them by their start.
        let mut name = format!("{} {} {}", r.verb, r.target, r.body);
        if name.len() > 160 {
            let cut = (0..=160)
                .rev()
                .find(|i| name.is_char_boundary(*i))
                .unwrap_or(0);
            name.truncate(cut);
            name.push('…');
        }
        let (tc, route, captures, query) = find(r.verb, r.target);
        assert_eq!(method(&route), r.method, "{name}: wrong method");
        covered.insert((route.verb.to_string(), route.template.to_string()));
        let result = tc.request(&route, &captures, query, r.body.as_bytes());
        match (&r.expect, result) {
            (Expect::Request(check), Ok(bytes)) => check(&bytes, &name),
            (Expect::Request(_), Err(e)) => panic!("{name}: {e}"),
            (Expect::Error { .. }, Ok(bytes)) => panic!("{name}: accepted as {bytes:?}"),
            (Expect::Error { field, words }, Err(e)) => {
                assert!(!e.is_internal(), "{name}: {e}");
                assert_eq!(e.field(), *field, "{name}: {e}");
                assert!(e.description().contains(words), "{name}: {e}");
                assert!(
                    field.is_none() || !e.description().contains(" at line "),
                    "{name}: a named field needs no position: {e}"
                );
            }
        }
    }
    covered
}

#[test]
fn request_rows() {
    check(&ours());
    check(&testing());
}

#[test]
fn error_rows() {
    check(&errors());
}

#[test]
fn hostile_rows() {
    check(&hostile());
}

#[test]
fn every_binding_has_a_row() {
    let mut covered = check(&ours());
    covered.extend(check(&testing()));
    let compiled: BTreeSet<(String, String)> = transcoders()
        .iter()
        .flat_map(|tc| tc.routes())
        .map(|r| (r.verb.to_string(), r.template.to_string()))
        .collect();
    let missing: Vec<_> = compiled.difference(&covered).collect();
    assert!(missing.is_empty(), "bindings without a row: {missing:?}");
    // Every binding of `tollgate.v1`: 54 routes, additional bindings
    // included.
    assert_eq!(transcoders()[0].routes().count(), 54);
}

/// A typed response in, JSON out.
struct Out {
    verb: &'static str,
    target: &'static str,
    message: Vec<u8>,
    json: &'static str,
}

fn out(
    verb: &'static str,
    target: &'static str,
    message: impl prost::Message,
    json: &'static str,
) -> Out {
    Out {
        verb,
        target,
        message: message.encode_to_vec(),
        json,
    }
}

#[test]
fn response_rows() {
    use t::thing::Color;
    let rows = [
        // Unset scalars written with their defaults, unset messages
        // (updateTime) omitted, enums by name, Timestamps in RFC 3339.
        out(
            "GET",
            "/v1/organizations/acme",
            v1::Organization {
                name: s("organizations/acme"),
                uid: s("0190"),
                display_name: s("Acme"),
                state: v1::organization::State::Active as i32,
                create_time: Some(Timestamp {
                    seconds: T0,
                    nanos: 120_000_000,
                }),
                update_time: None,
                etag: s("e1"),
            },
            r#"{"name":"organizations/acme","uid":"0190","displayName":"Acme","state":"ACTIVE","createTime":"2026-01-02T03:04:05.120Z","etag":"e1"}"#,
        ),
        // Repeated messages; empty lists and strings are written.
        out(
            "GET",
            "/v1/organizations/acme/users",
            v1::ListUsersResponse {
                users: vec![v1::User {
                    name: s("organizations/acme/users/bob"),
                    ..Default::default()
                }],
                next_page_token: String::new(),
            },
            r#"{"users":[{"name":"organizations/acme/users/bob","uid":"","displayName":"","email":"","state":"STATE_UNSPECIFIED","roles":[],"hasPassword":false,"etag":""}],"nextPageToken":""}"#,
        ),
        // google.protobuf.Empty.
        out("DELETE", "/v1/organizations/acme", (), "{}"),
        // `response_body` naming a message: that message alone.
        out(
            "GET",
            "/v1/files/a",
            t::GetFileResponse {
                file: Some(t::File {
                    path: s("files/a"),
                    content: b"files/a".to_vec(),
                }),
                etag: s("v1"),
            },
            r#"{"path":"files/a","content":"ZmlsZXMvYQ=="}"#,
        ),
        // … an unset message: null.
        out("GET", "/v1/files/a", t::GetFileResponse::default(), "null"),
        // `response_body` naming a repeated field.
        out(
            "GET",
            "/v1/things/t1/tags",
            t::Thing {
                name: s("things/t1"),
                tags: strings(&["a", "b"]),
                ..Default::default()
            },
            r#"["a","b"]"#,
        ),
        out("GET", "/v1/things/t1/tags", t::Thing::default(), "[]"),
        // int64/uint64 as strings, wrappers as plain values, Duration in
        // seconds, FieldMask in JSON names, bytes in base64, `optional`
        // written when set even to its default, enums by name.
        out(
            "GET",
            "/v1/things:search",
            t::SearchThingsResponse {
                request: Some(t::SearchThingsRequest {
                    filter: Some(t::Filter {
                        max_age: Some(Duration {
                            seconds: 90,
                            nanos: 500_000_000,
                        }),
                        ..Default::default()
                    }),
                    min_size: -1,
                    max_views: u64::MAX,
                    ids: vec![1, 2],
                    quota: Some(7),
                    archived: None,
                    read_mask: mask(&["display_name", "filter.owner"]),
                    token: vec![0xfb, 0xff],
                    colors: vec![Color::Green as i32],
                    ..Default::default()
                }),
                things: vec![t::Thing {
                    size: 1 << 60,
                    views: 3,
                    color: Color::Red as i32,
                    priority: Some(0),
                    ..Default::default()
                }],
            },
            concat!(
                r#"{"request":{"filter":{"color":"COLOR_UNSPECIFIED","tags":[],"maxAge":"90.500s"},"#,
                r#""minSize":"-1","maxViews":"18446744073709551615","ids":[1,2],"quota":"7","#,
                r#""readMask":"displayName,filter.owner","exact":false,"score":0.0,"token":"+/8=","#,
                r#""colors":["GREEN"]},"#,
                r#""things":[{"name":"","displayName":"","tags":[],"size":"1152921504606846976","views":"3","#,
                r#""color":"RED","checksum":"","priority":0}]}"#
            ),
        ),
        // Struct, Value, Empty, maps (64-bit values as strings).
        out(
            "PUT",
            "/v1/counters/7",
            t::Counter {
                id: 7,
                limit: Some(100),
                ratio: None,
                window: Some(Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                labels: Some(prost_types::Struct {
                    fields: [(s("a"), number(1.5))].into(),
                }),
                extra: Some(prost_types::Value {
                    kind: Some(prost_types::value::Kind::NullValue(0)),
                }),
                reset: Some(()),
                per_key: [(s("k"), 3)].into(),
            },
            r#"{"id":"7","limit":"100","window":"30s","labels":{"a":1.5},"extra":null,"reset":{},"perKey":{"k":"3"}}"#,
        ),
    ];
    for r in rows {
        let (tc, route, _, _) = find(r.verb, r.target);
        let json = tc.response(&route, &r.message).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r.json,
            "{} {}",
            r.verb,
            r.target
        );
    }
    // An undecodable response is our fault, not the client's.
    let (tc, route, _, _) = find("GET", "/v1/organizations/acme");
    let e = tc.response(&route, b"\xff\xff").unwrap_err();
    assert!(
        matches!(e, TranscodeError::Response(_)) && e.is_internal(),
        "{e}"
    );
}

#[test]
fn streaming_rows() {
    let (tc, route, _, _) = find("GET", "/v1/shelves/s1/things:watch");
    assert!(route.server_streaming());
    let line = tc
        .stream_result(
            &route,
            &tollgate_e2e::testing_service::watched_thing("shelves/s1", 1).encode_to_vec(),
        )
        .unwrap();
    assert_eq!(
        String::from_utf8(line).unwrap(),
        concat!(
            r#"{"result":{"sequence":"1","thing":{"name":"shelves/s1/things/1","displayName":"","#,
            r#""tags":[],"size":"1","views":"0","color":"COLOR_UNSPECIFIED","checksum":""}}}"#,
            "\n"
        )
    );
    // The terminal error line: the status as every HTTP/JSON error body,
    // details included.
    let status = <tonic::Status as tonic_types::StatusExt>::with_error_details(
        tonic::Code::FailedPrecondition,
        tollgate_e2e::testing_service::WATCH_FAILURE,
        tonic_types::ErrorDetails::with_error_info("ASKED", "tollgate.dev", []),
    );
    let line = tc.stream_error(&status);
    let text = String::from_utf8(line).unwrap();
    let json = text.strip_suffix('\n').expect("a line ends with a newline");
    assert!(!json.contains('\n'), "{text}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(json).unwrap(),
        serde_json::json!({"error": {
            "code": 9,
            "message": "asked to fail",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ASKED",
                "domain": "tollgate.dev",
                "metadata": {},
            }],
        }})
    );
}
