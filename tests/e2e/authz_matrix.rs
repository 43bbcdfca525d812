//! The authorization matrix: every `tollgate.v1` method, read from the
//! descriptor set, called by every kind of caller, against the code each
//! must get. A method added without its row fails here, so no RPC ships
//! without a cross-organization test.

use std::collections::BTreeSet;

use tollgate_client::tonic::Status;
use tollgate_e2e::{
    Client, Code, TestServer, each_backend,
    fixtures::{
        create_key, create_oauth_client, create_org, create_rate_limit_policy, create_sa,
        create_user, mask, oauth_clients, org_name, roles,
    },
    rpc::{RpcResult as _, assert_error_info},
    v1::{
        ApiKey, BatchCheckRequest, CheckRateLimitRequest, CheckRequest, CreateApiKeyRequest,
        CreateOAuthClientRequest, CreateOrganizationRequest, CreateRateLimitPolicyRequest,
        CreateServiceAccountRequest, CreateUserRequest, CreateWebhookRequest,
        DeleteOAuthClientRequest, DeleteOrganizationRequest, DeleteRateLimitPolicyRequest,
        DeleteServiceAccountRequest, DeleteUserRequest, DeleteWebhookRequest, GetApiKeyRequest,
        GetOAuthClientRequest, GetOrganizationRequest, GetRateLimitPolicyRequest,
        GetServiceAccountRequest, GetUsageRequest, GetUserRequest, GetWebhookRequest,
        IntrospectTokenRequest, IssueTokenRequest, ListApiKeysRequest, ListDeliveriesRequest,
        ListEventsRequest, ListOAuthClientsRequest, ListOrganizationsRequest,
        ListRateLimitPoliciesRequest, ListServiceAccountsRequest, ListSigningKeysRequest,
        ListUsersRequest, ListWebhooksRequest, OAuthClient, Organization, RateLimit,
        RateLimitDescriptor, RateLimitPolicy, RetryDeliveryRequest, RevokeApiKeyRequest,
        RevokeTokenRequest, RotateOAuthClientSecretRequest, RotateSigningKeyRequest,
        RotateWebhookSecretRequest, ServiceAccount, SetPasswordRequest, UpdateOAuthClientRequest,
        UpdateOrganizationRequest, UpdateRateLimitPolicyRequest, UpdateServiceAccountRequest,
        UpdateUserRequest, UpdateWebhookRequest, User, WatchEventsRequest, Webhook, check_request,
        delivery, o_auth_client::ClientType, rate_limit, rate_limit_descriptor,
        rate_limit_service_client::RateLimitServiceClient,
        usage_service_client::UsageServiceClient, webhook,
    },
};

/// Who calls. Every caller but the anonymous ones holds a key of a service
/// account with one role; "same organization" is `acme`, the target of
/// every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    BadCredential,
    Viewer,
    Editor,
    Admin,
    /// An admin of another organization, `beta`.
    OtherAdmin,
    /// An admin of `root`.
    Platform,
}

const EVERYONE: [Who; 7] = [
    Who::Anonymous,
    Who::BadCredential,
    Who::Viewer,
    Who::Editor,
    Who::Admin,
    Who::OtherAdmin,
    Who::Platform,
];

/// The weakest caller a method lets through in its own organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Min {
    Viewer,
    Editor,
    Admin,
    Platform,
}

/// One row: a method, the weakest caller it admits, and whether it spans
/// organizations (each caller sees its own part, so an admin of another
/// organization is let through too).
struct Row {
    method: &'static str,
    min: Min,
    spans_orgs: bool,
    /// A public method: every caller, credentials or not, gets the
    /// method's own answer to the request the matrix sends.
    public: Option<Code>,
    /// Declared in the protos (so the authorize layer enforces its
    /// policy) but not served yet: a caller the layer lets through gets
    /// UNIMPLEMENTED. Serving the method means turning its row into a
    /// [`row`] and writing its call.
    pending: bool,
}

const fn row(method: &'static str, min: Min) -> Row {
    Row {
        method,
        min,
        spans_orgs: false,
        public: None,
        pending: false,
    }
}

/// A public method whose matrix request is answered `code` for everyone.
const fn public(method: &'static str, code: Code) -> Row {
    Row {
        method,
        min: Min::Viewer,
        spans_orgs: true,
        public: Some(code),
        pending: false,
    }
}

/// A method declared but not served yet (see [`Row::pending`]); none is
/// today, the helper stays for the next one.
#[allow(dead_code)]
const fn pending(method: &'static str, min: Min) -> Row {
    Row {
        pending: true,
        ..row(method, min)
    }
}

const ROWS: &[Row] = &[
    row("OrganizationService/CreateOrganization", Min::Platform),
    row("OrganizationService/GetOrganization", Min::Viewer),
    Row {
        spans_orgs: true,
        ..row("OrganizationService/ListOrganizations", Min::Viewer)
    },
    row("OrganizationService/UpdateOrganization", Min::Admin),
    row("OrganizationService/DeleteOrganization", Min::Platform),
    row("UserService/CreateUser", Min::Editor),
    row("UserService/GetUser", Min::Viewer),
    row("UserService/ListUsers", Min::Viewer),
    row("UserService/UpdateUser", Min::Editor),
    row("UserService/DeleteUser", Min::Editor),
    row("UserService/SetPassword", Min::Editor),
    row("ServiceAccountService/CreateServiceAccount", Min::Editor),
    row("ServiceAccountService/GetServiceAccount", Min::Viewer),
    row("ServiceAccountService/ListServiceAccounts", Min::Viewer),
    row("ServiceAccountService/UpdateServiceAccount", Min::Editor),
    row("ServiceAccountService/DeleteServiceAccount", Min::Editor),
    row("ApiKeyService/CreateApiKey", Min::Editor),
    row("ApiKeyService/GetApiKey", Min::Viewer),
    row("ApiKeyService/ListApiKeys", Min::Viewer),
    row("ApiKeyService/RevokeApiKey", Min::Editor),
    row("OAuthClientService/CreateOAuthClient", Min::Editor),
    row("OAuthClientService/GetOAuthClient", Min::Viewer),
    row("OAuthClientService/ListOAuthClients", Min::Viewer),
    row("OAuthClientService/UpdateOAuthClient", Min::Editor),
    row("OAuthClientService/DeleteOAuthClient", Min::Editor),
    row("OAuthClientService/RotateOAuthClientSecret", Min::Editor),
    row("AuthorizationService/Check", Min::Viewer),
    row("AuthorizationService/BatchCheck", Min::Viewer),
    // The client authenticates in the request (here: an unsupported grant
    // and a missing token, refused before any client lookup).
    public("TokenService/IssueToken", Code::InvalidArgument),
    public("TokenService/RevokeToken", Code::InvalidArgument),
    // Anyone may ask about a token; outside its organization the answer
    // is only `active: false`.
    Row {
        spans_orgs: true,
        ..row("TokenService/IntrospectToken", Min::Viewer)
    },
    row("TokenService/ListSigningKeys", Min::Platform),
    row("TokenService/RotateSigningKey", Min::Platform),
    row("RateLimitPolicyService/CreateRateLimitPolicy", Min::Editor),
    row("RateLimitPolicyService/GetRateLimitPolicy", Min::Viewer),
    row("RateLimitPolicyService/ListRateLimitPolicies", Min::Viewer),
    row("RateLimitPolicyService/UpdateRateLimitPolicy", Min::Editor),
    row("RateLimitPolicyService/DeleteRateLimitPolicy", Min::Editor),
    row("RateLimitService/CheckRateLimit", Min::Viewer),
    row("UsageService/GetUsage", Min::Viewer),
    row("EventService/ListEvents", Min::Viewer),
    row("EventService/WatchEvents", Min::Viewer),
    row("WebhookService/CreateWebhook", Min::Editor),
    row("WebhookService/GetWebhook", Min::Viewer),
    row("WebhookService/ListWebhooks", Min::Viewer),
    row("WebhookService/UpdateWebhook", Min::Editor),
    row("WebhookService/DeleteWebhook", Min::Editor),
    row("WebhookService/RotateWebhookSecret", Min::Editor),
    row("WebhookService/ListDeliveries", Min::Viewer),
    row("WebhookService/RetryDelivery", Min::Editor),
];

impl Row {
    /// The code `who` must get.
    fn expected(&self, who: Who) -> Code {
        if let Some(code) = self.public {
            return code;
        }
        let passes = match who {
            Who::Anonymous | Who::BadCredential => return Code::Unauthenticated,
            Who::Platform => true,
            // The layer's check is coarse (does any organization grant the
            // permission?); the handler's names the organization.
            Who::OtherAdmin if self.pending => true,
            Who::OtherAdmin => self.spans_orgs,
            Who::Viewer => self.min <= Min::Viewer,
            Who::Editor => self.min <= Min::Editor,
            Who::Admin => self.min <= Min::Admin,
        };
        if passes && self.pending {
            Code::Unimplemented
        } else if passes {
            Code::Ok
        } else {
            Code::PermissionDenied
        }
    }
}

/// `Service/Method` of every `tollgate.v1` method, from the descriptors
/// the server reads its policies from.
fn served_methods() -> BTreeSet<String> {
    tollgate_e2e::descriptors::methods(|_| true)
}

#[test]
fn every_method_has_a_row() {
    let rows: BTreeSet<String> = ROWS.iter().map(|r| r.method.to_owned()).collect();
    let served = served_methods();
    let missing: Vec<_> = served.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "methods without a row in the authorization matrix: {missing:?}"
    );
    let stale: Vec<_> = rows.difference(&served).collect();
    assert!(stale.is_empty(), "rows for methods not served: {stale:?}");
}

/// The callers and the shared fixtures in `acme`.
struct World {
    platform: Client,
    callers: Vec<(Who, Client)>,
    /// A viewer user every non-destructive user call targets.
    worker: String,
    /// A key of `worker`.
    worker_key: String,
    /// A viewer service account for the non-destructive calls.
    bot: String,
    /// A confidential OAuth client acting as `bot`.
    app: String,
    /// A rate-limit policy every non-destructive policy call targets.
    policy: String,
    /// A webhook every non-destructive webhook call targets; it gets the
    /// `user.created` events of `acme` and refuses them (its address is
    /// loopback), so each is soon DEAD.
    hook: String,
}

impl World {
    async fn new(server: &TestServer) -> Self {
        let platform = server.admin();
        create_org(&platform, "acme", "Acme").await;
        create_org(&platform, "beta", "Beta").await;
        let mut callers = Vec::new();
        for who in EVERYONE {
            let client = match who {
                Who::Anonymous => server.anonymous(),
                Who::BadCredential => {
                    server.client(&format!("tg_{}_{}", "q".repeat(16), "Z".repeat(43)))
                }
                Who::Platform => server.admin(),
                Who::Viewer | Who::Editor | Who::Admin | Who::OtherAdmin => {
                    let (org, role) = match who {
                        Who::Viewer => ("acme", "viewer"),
                        Who::Editor => ("acme", "editor"),
                        Who::OtherAdmin => ("beta", "admin"),
                        _ => ("acme", "admin"),
                    };
                    let id = format!("caller-{role}");
                    let sa = create_sa(&platform, org, &id, &[role]).await;
                    server.client(&create_key(&platform, &sa.name, "matrix").await.secret)
                }
            };
            callers.push((who, client));
        }
        let worker = create_user(&platform, "acme", "worker", &["viewer"])
            .await
            .name;
        let worker_key = create_key(&platform, &worker, "worker").await.name;
        let bot = create_sa(&platform, "acme", "bot", &["viewer"]).await.name;
        let app = create_oauth_client(&platform, "acme", "app", false, Some(&bot))
            .await
            .name;
        let policy = create_rate_limit_policy(&platform, "acme", "matrix")
            .await
            .name;
        let hook = create_webhook(&platform, "hook").await;
        Self {
            platform,
            callers,
            worker,
            worker_key,
            bot,
            app,
            policy,
            hook,
        }
    }

    /// A DEAD delivery of `hook` made for cell `n`.
    async fn dead_delivery(&self, n: usize) -> String {
        create_user(&self.platform, "acme", &format!("hooked{n}"), &["viewer"]).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let list = self
                .platform
                .webhooks()
                .list_deliveries(ListDeliveriesRequest {
                    parent: self.hook.clone(),
                    page_size: 1,
                    ..Default::default()
                })
                .await
                .expect_ok()
                .deliveries;
            if let Some(d) = list.first()
                && d.status == delivery::Status::Dead as i32
            {
                return d.name.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no dead delivery: {list:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Calls `method` as `client`. Calls that could destroy what later
    /// cells need act on resources made for this cell (`n`) by the platform
    /// admin, so every cell sees the same world.
    async fn call(&self, method: &str, who: Who, client: &Client, n: usize) -> Result<(), Status> {
        let acme = org_name("acme");
        match method {
            "OrganizationService/CreateOrganization" => client
                .organizations()
                .create_organization(CreateOrganizationRequest {
                    organization_id: format!("new{n}"),
                    organization: Some(Organization {
                        display_name: "New".into(),
                        ..Default::default()
                    }),
                })
                .await
                .map(drop),
            "OrganizationService/GetOrganization" => client
                .organizations()
                .get_organization(GetOrganizationRequest { name: acme })
                .await
                .map(drop),
            "OrganizationService/ListOrganizations" => client
                .organizations()
                .list_organizations(ListOrganizationsRequest::default())
                .await
                .map(drop),
            "OrganizationService/UpdateOrganization" => client
                .organizations()
                .update_organization(UpdateOrganizationRequest {
                    organization: Some(Organization {
                        name: acme,
                        display_name: format!("Acme {n}"),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                })
                .await
                .map(drop),
            "OrganizationService/DeleteOrganization" => {
                // Tenants may not delete themselves: everyone but the
                // platform admin aims at `acme` itself (were it allowed,
                // the members would answer FAILED_PRECONDITION, not OK).
                let name = if who == Who::Platform {
                    let doomed = format!("doomed{n}");
                    create_org(&self.platform, &doomed, "Doomed").await;
                    org_name(&doomed)
                } else {
                    acme
                };
                client
                    .organizations()
                    .delete_organization(DeleteOrganizationRequest {
                        name,
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            "UserService/CreateUser" => client
                .users()
                .create_user(CreateUserRequest {
                    parent: acme,
                    user_id: format!("hire{n}"),
                    user: Some(User {
                        display_name: "Hire".into(),
                        email: format!("hire{n}@acme.example"),
                        roles: roles(&["viewer"]),
                        ..Default::default()
                    }),
                })
                .await
                .map(drop),
            "UserService/GetUser" => client
                .users()
                .get_user(GetUserRequest {
                    name: self.worker.clone(),
                })
                .await
                .map(drop),
            "UserService/ListUsers" => client
                .users()
                .list_users(ListUsersRequest {
                    parent: acme,
                    ..Default::default()
                })
                .await
                .map(drop),
            "UserService/UpdateUser" => client
                .users()
                .update_user(UpdateUserRequest {
                    user: Some(User {
                        name: self.worker.clone(),
                        display_name: format!("Worker {n}"),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                })
                .await
                .map(drop),
            "UserService/DeleteUser" => {
                let doomed =
                    create_user(&self.platform, "acme", &format!("doomed{n}"), &["viewer"])
                        .await
                        .name;
                client
                    .users()
                    .delete_user(DeleteUserRequest {
                        name: doomed,
                        etag: String::new(),
                    })
                    .await
                    .map(drop)
            }
            "UserService/SetPassword" => client
                .users()
                .set_password(SetPasswordRequest {
                    name: self.worker.clone(),
                    password: "correct horse battery staple".into(),
                })
                .await
                .map(drop),
            "ServiceAccountService/CreateServiceAccount" => client
                .service_accounts()
                .create_service_account(CreateServiceAccountRequest {
                    parent: acme,
                    service_account_id: format!("hire{n}"),
                    service_account: Some(ServiceAccount {
                        display_name: "Hire".into(),
                        roles: roles(&["viewer"]),
                        ..Default::default()
                    }),
                })
                .await
                .map(drop),
            "ServiceAccountService/GetServiceAccount" => client
                .service_accounts()
                .get_service_account(GetServiceAccountRequest {
                    name: self.bot.clone(),
                })
                .await
                .map(drop),
            "ServiceAccountService/ListServiceAccounts" => client
                .service_accounts()
                .list_service_accounts(ListServiceAccountsRequest {
                    parent: acme,
                    ..Default::default()
                })
                .await
                .map(drop),
            "ServiceAccountService/UpdateServiceAccount" => client
                .service_accounts()
                .update_service_account(UpdateServiceAccountRequest {
                    service_account: Some(ServiceAccount {
                        name: self.bot.clone(),
                        display_name: format!("Bot {n}"),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                })
                .await
                .map(drop),
            "ServiceAccountService/DeleteServiceAccount" => {
                let doomed = create_sa(&self.platform, "acme", &format!("doomed{n}"), &["viewer"])
                    .await
                    .name;
                client
                    .service_accounts()
                    .delete_service_account(DeleteServiceAccountRequest {
                        name: doomed,
                        etag: String::new(),
                    })
                    .await
                    .map(drop)
            }
            "ApiKeyService/CreateApiKey" => client
                .api_keys()
                .create_api_key(CreateApiKeyRequest {
                    parent: self.worker.clone(),
                    api_key: Some(ApiKey {
                        display_name: format!("key {n}"),
                        ..Default::default()
                    }),
                })
                .await
                .map(drop),
            "ApiKeyService/GetApiKey" => client
                .api_keys()
                .get_api_key(GetApiKeyRequest {
                    name: self.worker_key.clone(),
                })
                .await
                .map(drop),
            "ApiKeyService/ListApiKeys" => client
                .api_keys()
                .list_api_keys(ListApiKeysRequest {
                    parent: self.worker.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            "ApiKeyService/RevokeApiKey" => {
                let doomed = create_key(&self.platform, &self.worker, "doomed")
                    .await
                    .name;
                client
                    .api_keys()
                    .revoke_api_key(RevokeApiKeyRequest {
                        name: doomed,
                        etag: String::new(),
                    })
                    .await
                    .map(drop)
            }
            "OAuthClientService/CreateOAuthClient" => oauth_clients(client)
                .create_o_auth_client(CreateOAuthClientRequest {
                    parent: acme,
                    oauth_client_id: format!("hire{n}"),
                    oauth_client: Some(OAuthClient {
                        display_name: "Hire".into(),
                        client_type: ClientType::Confidential as i32,
                        grant_types: vec!["client_credentials".into()],
                        service_account: self.bot.clone(),
                        ..Default::default()
                    }),
                })
                .await
                .map(drop),
            "OAuthClientService/GetOAuthClient" => oauth_clients(client)
                .get_o_auth_client(GetOAuthClientRequest {
                    name: self.app.clone(),
                })
                .await
                .map(drop),
            "OAuthClientService/ListOAuthClients" => oauth_clients(client)
                .list_o_auth_clients(ListOAuthClientsRequest {
                    parent: acme,
                    ..Default::default()
                })
                .await
                .map(drop),
            "OAuthClientService/UpdateOAuthClient" => oauth_clients(client)
                .update_o_auth_client(UpdateOAuthClientRequest {
                    oauth_client: Some(OAuthClient {
                        name: self.app.clone(),
                        display_name: format!("App {n}"),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                })
                .await
                .map(drop),
            "OAuthClientService/DeleteOAuthClient" => {
                let doomed =
                    create_oauth_client(&self.platform, "acme", &format!("doomed{n}"), true, None)
                        .await
                        .name;
                oauth_clients(client)
                    .delete_o_auth_client(DeleteOAuthClientRequest {
                        name: doomed,
                        etag: String::new(),
                    })
                    .await
                    .map(drop)
            }
            "OAuthClientService/RotateOAuthClientSecret" => oauth_clients(client)
                .rotate_o_auth_client_secret(RotateOAuthClientSecretRequest {
                    name: self.app.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            "AuthorizationService/Check" => client
                .authorization()
                .check(CheckRequest {
                    subject: Some(check_request::Subject::Principal(self.bot.clone())),
                    permission: "users.get".into(),
                    resource: acme.clone(),
                })
                .await
                .map(drop),
            "AuthorizationService/BatchCheck" => client
                .authorization()
                .batch_check(BatchCheckRequest {
                    checks: vec![CheckRequest {
                        subject: Some(check_request::Subject::Principal(self.bot.clone())),
                        permission: "users.get".into(),
                        resource: acme.clone(),
                    }],
                })
                .await
                .map(drop),
            "TokenService/IssueToken" => client
                .tokens()
                .issue_token(IssueTokenRequest {
                    grant_type: "password".into(),
                    client_id: self.app.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            "TokenService/RevokeToken" => client
                .tokens()
                .revoke_token(RevokeTokenRequest {
                    client_id: self.app.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            "TokenService/IntrospectToken" => client
                .tokens()
                .introspect_token(IntrospectTokenRequest {
                    token: "tg_notatoken".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            "TokenService/ListSigningKeys" => client
                .tokens()
                .list_signing_keys(ListSigningKeysRequest::default())
                .await
                .map(drop),
            "TokenService/RotateSigningKey" => client
                .tokens()
                .rotate_signing_key(RotateSigningKeyRequest {
                    algorithm: "ES256".into(),
                    immediate: false,
                })
                .await
                .map(drop),
            "RateLimitPolicyService/CreateRateLimitPolicy" => client
                .rate_limit_policies()
                .create_rate_limit_policy(CreateRateLimitPolicyRequest {
                    parent: acme,
                    rate_limit_policy_id: format!("hire{n}"),
                    rate_limit_policy: Some(RateLimitPolicy {
                        limit: Some(RateLimit {
                            limit: 10,
                            period: rate_limit::Period::Second as i32,
                            burst: None,
                        }),
                        ..Default::default()
                    }),
                })
                .await
                .map(drop),
            "RateLimitPolicyService/GetRateLimitPolicy" => client
                .rate_limit_policies()
                .get_rate_limit_policy(GetRateLimitPolicyRequest {
                    name: self.policy.clone(),
                })
                .await
                .map(drop),
            "RateLimitPolicyService/ListRateLimitPolicies" => client
                .rate_limit_policies()
                .list_rate_limit_policies(ListRateLimitPoliciesRequest {
                    parent: acme,
                    ..Default::default()
                })
                .await
                .map(drop),
            "RateLimitPolicyService/UpdateRateLimitPolicy" => client
                .rate_limit_policies()
                .update_rate_limit_policy(UpdateRateLimitPolicyRequest {
                    rate_limit_policy: Some(RateLimitPolicy {
                        name: self.policy.clone(),
                        display_name: format!("Policy {n}"),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                })
                .await
                .map(drop),
            "RateLimitPolicyService/DeleteRateLimitPolicy" => {
                let doomed =
                    create_rate_limit_policy(&self.platform, "acme", &format!("doomed{n}"))
                        .await
                        .name;
                client
                    .rate_limit_policies()
                    .delete_rate_limit_policy(DeleteRateLimitPolicyRequest {
                        name: doomed,
                        etag: String::new(),
                    })
                    .await
                    .map(drop)
            }
            "RateLimitService/CheckRateLimit" => RateLimitServiceClient::new(client.channel())
                .check_rate_limit(CheckRateLimitRequest {
                    parent: acme,
                    descriptors: vec![RateLimitDescriptor {
                        entries: vec![rate_limit_descriptor::Entry {
                            key: "matrix".into(),
                            value: n.to_string(),
                        }],
                    }],
                    hits_addend: 1,
                    dry_run: true,
                })
                .await
                .map(drop),
            "UsageService/GetUsage" => UsageServiceClient::new(client.channel())
                .get_usage(GetUsageRequest {
                    parent: acme,
                    ..Default::default()
                })
                .await
                .map(drop),
            "EventService/ListEvents" => client
                .events()
                .list_events(ListEventsRequest {
                    parent: acme,
                    ..Default::default()
                })
                .await
                .map(drop),
            // Authorized when the stream opens; dropping it ends the watch.
            "EventService/WatchEvents" => client
                .events()
                .watch_events(WatchEventsRequest {
                    parent: acme,
                    ..Default::default()
                })
                .await
                .map(drop),
            "WebhookService/CreateWebhook" => client
                .webhooks()
                .create_webhook(CreateWebhookRequest {
                    parent: acme,
                    webhook_id: format!("hire{n}"),
                    webhook: Some(Webhook {
                        display_name: "Hire".into(),
                        url: "https://hooks.example.com/in".into(),
                        event_types: vec!["apiKey.*".into()],
                        state: webhook::State::Disabled as i32,
                        ..Default::default()
                    }),
                })
                .await
                .map(drop),
            "WebhookService/GetWebhook" => client
                .webhooks()
                .get_webhook(GetWebhookRequest {
                    name: self.hook.clone(),
                })
                .await
                .map(drop),
            "WebhookService/ListWebhooks" => client
                .webhooks()
                .list_webhooks(ListWebhooksRequest {
                    parent: acme,
                    ..Default::default()
                })
                .await
                .map(drop),
            "WebhookService/UpdateWebhook" => client
                .webhooks()
                .update_webhook(UpdateWebhookRequest {
                    webhook: Some(Webhook {
                        name: self.hook.clone(),
                        display_name: format!("Hook {n}"),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                })
                .await
                .map(drop),
            "WebhookService/DeleteWebhook" => {
                let doomed = create_webhook(&self.platform, &format!("doomed{n}")).await;
                client
                    .webhooks()
                    .delete_webhook(DeleteWebhookRequest {
                        name: doomed,
                        etag: String::new(),
                    })
                    .await
                    .map(drop)
            }
            "WebhookService/RotateWebhookSecret" => client
                .webhooks()
                .rotate_webhook_secret(RotateWebhookSecretRequest {
                    name: self.hook.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            "WebhookService/ListDeliveries" => client
                .webhooks()
                .list_deliveries(ListDeliveriesRequest {
                    parent: self.hook.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            "WebhookService/RetryDelivery" => {
                // Only callers past the layer reach the handler; the
                // others are refused before any delivery matters.
                let name = if matches!(who, Who::Editor | Who::Admin | Who::Platform) {
                    self.dead_delivery(n).await
                } else {
                    format!("{}/deliveries/1", self.hook)
                };
                client
                    .webhooks()
                    .retry_delivery(RetryDeliveryRequest { name })
                    .await
                    .map(drop)
            }
            other => panic!("no call written for {other}: add it beside its row"),
        }
    }
}

/// Webhook `id` of `acme`, for `user.created`, at an address the server
/// refuses (loopback, over https): its deliveries are soon DEAD.
async fn create_webhook(platform: &Client, id: &str) -> String {
    platform
        .webhooks()
        .create_webhook(CreateWebhookRequest {
            parent: org_name("acme"),
            webhook_id: id.into(),
            webhook: Some(Webhook {
                display_name: "Hook".into(),
                url: "https://localhost:1/hook".into(),
                event_types: vec!["user.created".into()],
                ..Default::default()
            }),
        })
        .await
        .expect_ok()
        .name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_for_every_caller() {
    each_backend(async |server: &mut TestServer| {
        let world = World::new(server).await;
        let mut wrong = Vec::new();
        let mut n = 0;
        for row in ROWS {
            for (who, client) in &world.callers {
                n += 1;
                let got = world.call(row.method, *who, client, n).await;
                let code = match &got {
                    Ok(()) => Code::Ok,
                    Err(s) => {
                        assert_error_info(s);
                        s.code()
                    }
                };
                let want = row.expected(*who);
                if code != want {
                    wrong.push(format!(
                        "{} as {who:?}: want {want:?}, got {code:?} {:?}",
                        row.method,
                        got.err().map(|s| s.message().to_owned())
                    ));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "authorization matrix:\n{}",
            wrong.join("\n")
        );
        Ok(())
    })
    .await;
}

/// The proto option, not the code, decides: a server whose descriptors say
/// GetOrganization needs `organizations.update` refuses it to a viewer and
/// an editor and still serves an admin, while ListOrganizations, untouched,
/// still serves the viewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proto_option_is_what_is_enforced() {
    let fds = tollgate_e2e::policy::with_permission(
        "OrganizationService",
        "GetOrganization",
        "organizations.update",
    );
    for backend in tollgate_e2e::backends() {
        let policies = tollgate_server::policy::Policies::load(&fds).expect("edited policies load");
        let mut server = TestServer::start_with_policies(&backend, policies)
            .await
            .expect("server starts");
        let world = World::new(&server).await;
        let get = |client: &Client| {
            let client = client.clone();
            async move {
                match client
                    .organizations()
                    .get_organization(GetOrganizationRequest {
                        name: org_name("acme"),
                    })
                    .await
                {
                    Ok(_) => Code::Ok,
                    Err(s) => s.code(),
                }
            }
        };
        for (who, client) in &world.callers {
            let want = match who {
                Who::Anonymous | Who::BadCredential => Code::Unauthenticated,
                Who::Viewer | Who::Editor | Who::OtherAdmin => Code::PermissionDenied,
                Who::Admin | Who::Platform => Code::Ok,
            };
            assert_eq!(get(client).await, want, "[{backend}] {who:?}");
        }
        let viewer = &world.callers[2];
        assert_eq!(viewer.0, Who::Viewer);
        assert!(
            world
                .call(
                    "OrganizationService/ListOrganizations",
                    Who::Viewer,
                    &viewer.1,
                    0
                )
                .await
                .is_ok(),
            "[{backend}] other methods keep their policy"
        );
        server.stop().await.expect("clean stop");
    }
}
