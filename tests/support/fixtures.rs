//! The resources most scenarios start with, created through the public API
//! with the caller's client. Each helper panics with the server's answer
//! when the create fails, since nothing after it would make sense.

use tollgate_client::{
    Client, TollgateChannel,
    prost_types::{FieldMask, Timestamp},
    tonic::{self, Code},
    v1::{
        ApiKey, CreateApiKeyRequest, CreateOAuthClientRequest, CreateOrganizationRequest,
        CreateRateLimitPolicyRequest, CreateServiceAccountRequest, CreateUserRequest, OAuthClient,
        Organization, RateLimit, RateLimitPolicy, ServiceAccount, User, o_auth_client::ClientType,
        o_auth_client_service_client::OAuthClientServiceClient, rate_limit,
    },
};

use crate::rpc::RpcResult as _;

/// `organizations/{id}`.
pub fn org_name(id: &str) -> String {
    format!("organizations/{id}")
}

/// `organizations/{org}/users/{id}`.
pub fn user_name(org: &str, id: &str) -> String {
    format!("organizations/{org}/users/{id}")
}

/// `organizations/{org}/serviceAccounts/{id}`.
pub fn sa_name(org: &str, id: &str) -> String {
    format!("organizations/{org}/serviceAccounts/{id}")
}

/// A field mask of `paths`.
pub fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// Roles as the API takes them.
pub fn roles(roles: &[&str]) -> Vec<String> {
    roles.iter().map(|r| (*r).to_owned()).collect()
}

/// A timestamp in the RFC 3339 form filters take, quoted.
pub fn quoted_time(ts: Option<&Timestamp>) -> String {
    format!("\"{}\"", ts.expect("a timestamp"))
}

/// A timestamp as microseconds since the epoch, for comparisons.
pub fn micros(ts: Option<&Timestamp>) -> i64 {
    let ts = ts.expect("a timestamp");
    ts.seconds * 1_000_000 + i64::from(ts.nanos / 1000)
}

/// The last segment of a resource name.
pub fn id_of(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Creates `organizations/{id}` with display name `display`.
pub async fn create_org(client: &Client, id: &str, display: &str) -> Organization {
    client
        .organizations()
        .create_organization(CreateOrganizationRequest {
            organization_id: id.into(),
            organization: Some(Organization {
                display_name: display.into(),
                ..Default::default()
            }),
        })
        .await
        .expect_ok()
}

/// Creates user `id` in `org`, with email `<id>@example.com`.
pub async fn create_user(client: &Client, org: &str, id: &str, role_names: &[&str]) -> User {
    client
        .users()
        .create_user(CreateUserRequest {
            parent: org_name(org),
            user_id: id.into(),
            user: Some(User {
                display_name: format!("User {id}"),
                email: format!("{id}@example.com"),
                roles: roles(role_names),
                ..Default::default()
            }),
        })
        .await
        .expect_ok()
}

/// Creates service account `id` in `org`.
pub async fn create_sa(
    client: &Client,
    org: &str,
    id: &str,
    role_names: &[&str],
) -> ServiceAccount {
    client
        .service_accounts()
        .create_service_account(CreateServiceAccountRequest {
            parent: org_name(org),
            service_account_id: id.into(),
            service_account: Some(ServiceAccount {
                display_name: format!("Service account {id}"),
                roles: roles(role_names),
                ..Default::default()
            }),
        })
        .await
        .expect_ok()
}

/// Mints a key for `parent` (a user or service account name); the result
/// carries the secret.
pub async fn create_key(client: &Client, parent: &str, display: &str) -> ApiKey {
    let key = client
        .api_keys()
        .create_api_key(CreateApiKeyRequest {
            parent: parent.into(),
            api_key: Some(ApiKey {
                display_name: display.into(),
                ..Default::default()
            }),
        })
        .await
        .expect_ok();
    assert!(key.secret.starts_with("tg_"), "no secret in {key:?}");
    key
}

/// Creates service account `id` in `org` with `role_names` and one key;
/// returns the key's secret.
pub async fn sa_with_key(client: &Client, org: &str, id: &str, role_names: &[&str]) -> String {
    let sa = create_sa(client, org, id, role_names).await;
    create_key(client, &sa.name, "fixture").await.secret
}

/// Whether a call authenticated with `client` gets through: it reads
/// `organizations/{org}` and returns the code (OK or the refusal).
pub async fn probe(client: &Client, org: &str) -> Code {
    match client
        .organizations()
        .get_organization(tollgate_client::v1::GetOrganizationRequest {
            name: org_name(org),
        })
        .await
    {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// A request with `metadata` set, for credentials the client crate does
/// not send itself (`x-api-key`, other schemes).
pub fn with_header<T>(message: T, name: &'static str, value: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut()
        .insert(name, value.parse().expect("an ASCII metadata value"));
    req
}

/// `tollgate.v1.OAuthClientService` over `client`'s channel (the client
/// crate has no accessor for it).
pub fn oauth_clients(client: &Client) -> OAuthClientServiceClient<TollgateChannel> {
    OAuthClientServiceClient::new(client.channel())
}

/// A policy of `org` with id `id`: 100 requests per minute per principal,
/// for every call.
pub async fn create_rate_limit_policy(client: &Client, org: &str, id: &str) -> RateLimitPolicy {
    client
        .rate_limit_policies()
        .create_rate_limit_policy(CreateRateLimitPolicyRequest {
            parent: org_name(org),
            rate_limit_policy_id: id.into(),
            rate_limit_policy: Some(RateLimitPolicy {
                display_name: format!("Policy {id}"),
                limit: Some(RateLimit {
                    limit: 100,
                    period: rate_limit::Period::Minute as i32,
                    burst: None,
                }),
                ..Default::default()
            }),
        })
        .await
        .expect_ok()
}

/// A client of `org` with id `id`: a public one using the code grant, or
/// a confidential one that also acts as `service_account` (a name) when
/// given. The result carries the secret of a confidential client.
pub async fn create_oauth_client(
    client: &Client,
    org: &str,
    id: &str,
    public: bool,
    service_account: Option<&str>,
) -> OAuthClient {
    let mut grants = vec!["authorization_code".to_owned(), "refresh_token".to_owned()];
    if service_account.is_some() {
        grants.push("client_credentials".to_owned());
    }
    oauth_clients(client)
        .create_o_auth_client(CreateOAuthClientRequest {
            parent: org_name(org),
            oauth_client_id: id.into(),
            oauth_client: Some(OAuthClient {
                display_name: format!("Client {id}"),
                client_type: if public {
                    ClientType::Public
                } else {
                    ClientType::Confidential
                } as i32,
                redirect_uris: vec!["https://app.example/cb".into()],
                grant_types: grants,
                scopes: vec!["openid".into(), "users.get".into()],
                service_account: service_account.unwrap_or_default().into(),
                ..Default::default()
            }),
        })
        .await
        .expect_ok()
}
