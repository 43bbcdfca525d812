//! Every write leaves exactly one typed event in the outbox, in its own
//! transaction: the right type, resource, actor and request id, and the
//! resource as it is after the change. A write that fails leaves none. The
//! list of writes comes from the descriptors (every method without
//! `idempotency_level = NO_SIDE_EFFECTS`), so a new write without its row
//! fails here.

use std::collections::BTreeSet;

use tollgate::tollgate::v1::event::After;
use tollgate_client::tonic::Status;
use tollgate_e2e::{
    Client, Code, TestServer, each_backend,
    fixtures::{
        create_key, create_oauth_client, create_org, create_rate_limit_policy, create_sa,
        create_user, mask, oauth_clients, org_name, roles, with_header,
    },
    outbox,
    rpc::RpcResult as _,
    v1::{
        ApiKey, CreateApiKeyRequest, CreateOAuthClientRequest, CreateOrganizationRequest,
        CreateRateLimitPolicyRequest, CreateServiceAccountRequest, CreateUserRequest,
        CreateWebhookRequest, DeleteOAuthClientRequest, DeleteOrganizationRequest,
        DeleteRateLimitPolicyRequest, DeleteServiceAccountRequest, DeleteUserRequest,
        DeleteWebhookRequest, OAuthClient, Organization, RateLimitPolicy, RateLimitQuota,
        RevokeApiKeyRequest, RotateOAuthClientSecretRequest, RotateWebhookSecretRequest,
        ServiceAccount, SetPasswordRequest, UpdateOAuthClientRequest, UpdateOrganizationRequest,
        UpdateRateLimitPolicyRequest, UpdateServiceAccountRequest, UpdateUserRequest,
        UpdateWebhookRequest, User, Webhook, o_auth_client::ClientType, rate_limit_quota,
    },
};

/// A webhook the writes act on; its address is never reached (these
/// servers refuse loopback).
fn webhook() -> Webhook {
    Webhook {
        display_name: "Hook".into(),
        url: "https://localhost:1/hook".into(),
        event_types: vec!["webhook.*".into()],
        ..Default::default()
    }
}

const ADMIN: &str = "organizations/root/serviceAccounts/admin";

/// Writes this table does not cover, and why.
const ELSEWHERE: &[&str] = &[
    // Credentials, not resources: issuing appends nothing (the security
    // log is its trail). Revoking, called by an OAuth client rather than
    // a principal, appends `token.revoked`: checked in
    // oauth::revocation::revocations_are_events.
    "TokenService/IssueToken",
    "TokenService/IntrospectToken",
    "TokenService/RevokeToken",
    // Platform-wide and two events per rotation (the new key, the key it
    // replaces): checked in oauth::tokens::discovery_jwks_and_rotation.
    "TokenService/RotateSigningKey",
    // Charges counters, changes no resource (and is not served yet).
    "RateLimitService/CheckRateLimit",
    // A delivery is the record of an event sent, not a resource with a
    // history: retrying one appends nothing (webhooks.rs checks it).
    "WebhookService/RetryDelivery",
];

/// `Service/Method` of every write, from the descriptors.
fn writes() -> BTreeSet<String> {
    tollgate_e2e::descriptors::methods(|m| !tollgate_e2e::descriptors::is_read(m))
        .into_iter()
        .filter(|m| !ELSEWHERE.contains(&m.as_str()))
        .collect()
}

/// The writes, each with the event type it must append.
const ROWS: &[(&str, &str)] = &[
    (
        "OrganizationService/CreateOrganization",
        "organization.created",
    ),
    (
        "OrganizationService/UpdateOrganization",
        "organization.updated",
    ),
    (
        "OrganizationService/DeleteOrganization",
        "organization.deleted",
    ),
    ("UserService/CreateUser", "user.created"),
    ("UserService/UpdateUser", "user.updated"),
    ("UserService/DeleteUser", "user.deleted"),
    ("UserService/SetPassword", "user.passwordSet"),
    (
        "ServiceAccountService/CreateServiceAccount",
        "serviceAccount.created",
    ),
    (
        "ServiceAccountService/UpdateServiceAccount",
        "serviceAccount.updated",
    ),
    (
        "ServiceAccountService/DeleteServiceAccount",
        "serviceAccount.deleted",
    ),
    ("ApiKeyService/CreateApiKey", "apiKey.created"),
    ("ApiKeyService/RevokeApiKey", "apiKey.revoked"),
    (
        "OAuthClientService/CreateOAuthClient",
        "oauthClient.created",
    ),
    (
        "OAuthClientService/UpdateOAuthClient",
        "oauthClient.updated",
    ),
    (
        "OAuthClientService/DeleteOAuthClient",
        "oauthClient.deleted",
    ),
    (
        "OAuthClientService/RotateOAuthClientSecret",
        "oauthClient.secretRotated",
    ),
    (
        "RateLimitPolicyService/CreateRateLimitPolicy",
        "rateLimitPolicy.created",
    ),
    (
        "RateLimitPolicyService/UpdateRateLimitPolicy",
        "rateLimitPolicy.updated",
    ),
    (
        "RateLimitPolicyService/DeleteRateLimitPolicy",
        "rateLimitPolicy.deleted",
    ),
    ("WebhookService/CreateWebhook", "webhook.created"),
    ("WebhookService/UpdateWebhook", "webhook.updated"),
    ("WebhookService/DeleteWebhook", "webhook.deleted"),
    (
        "WebhookService/RotateWebhookSecret",
        "webhook.secretRotated",
    ),
];

#[test]
fn every_write_has_a_row() {
    let rows: BTreeSet<String> = ROWS.iter().map(|(m, _)| (*m).to_owned()).collect();
    assert_eq!(
        rows,
        writes(),
        "rows of this table vs. the writes the protos declare"
    );
}

/// Sets up what `method` acts on (in organization `org`), then calls it
/// with `x-request-id: request_id`; returns the outbox id before the call
/// and the resource the event must name.
async fn write(
    server: &TestServer,
    admin: &Client,
    method: &str,
    org: &str,
    request_id: &str,
) -> (i64, String, Result<(), Status>) {
    let parent = org_name(org);
    let user = format!("{parent}/users/u");
    let sa = format!("{parent}/serviceAccounts/s");
    let oauth_client = format!("{parent}/clients/c");
    let policy = format!("{parent}/rateLimitPolicies/p");
    let hook = format!("{parent}/webhooks/h");
    // Fixtures first: they append events of their own.
    match method {
        "OrganizationService/CreateOrganization" => {}
        "UserService/CreateUser" | "ServiceAccountService/CreateServiceAccount" => {
            create_org(admin, org, "Org").await;
        }
        "OrganizationService/UpdateOrganization" | "OrganizationService/DeleteOrganization" => {
            create_org(admin, org, "Org").await;
        }
        "UserService/UpdateUser" | "UserService/DeleteUser" | "UserService/SetPassword" => {
            create_org(admin, org, "Org").await;
            create_user(admin, org, "u", &["viewer"]).await;
        }
        "ServiceAccountService/UpdateServiceAccount"
        | "ServiceAccountService/DeleteServiceAccount"
        | "ApiKeyService/CreateApiKey" => {
            create_org(admin, org, "Org").await;
            create_sa(admin, org, "s", &["viewer"]).await;
        }
        "ApiKeyService/RevokeApiKey" => {
            create_org(admin, org, "Org").await;
            create_sa(admin, org, "s", &["viewer"]).await;
        }
        "OAuthClientService/CreateOAuthClient" => {
            create_org(admin, org, "Org").await;
            create_sa(admin, org, "s", &["viewer"]).await;
        }
        "OAuthClientService/UpdateOAuthClient"
        | "OAuthClientService/DeleteOAuthClient"
        | "OAuthClientService/RotateOAuthClientSecret" => {
            create_org(admin, org, "Org").await;
            let sa = create_sa(admin, org, "s", &["viewer"]).await;
            create_oauth_client(admin, org, "c", false, Some(&sa.name)).await;
        }
        "RateLimitPolicyService/CreateRateLimitPolicy" | "WebhookService/CreateWebhook" => {
            create_org(admin, org, "Org").await;
        }
        "WebhookService/UpdateWebhook"
        | "WebhookService/DeleteWebhook"
        | "WebhookService/RotateWebhookSecret" => {
            create_org(admin, org, "Org").await;
            admin
                .webhooks()
                .create_webhook(CreateWebhookRequest {
                    parent: parent.clone(),
                    webhook_id: "h".into(),
                    webhook: Some(webhook()),
                })
                .await
                .expect("a webhook");
        }
        "RateLimitPolicyService/UpdateRateLimitPolicy"
        | "RateLimitPolicyService/DeleteRateLimitPolicy" => {
            create_org(admin, org, "Org").await;
            create_rate_limit_policy(admin, org, "p").await;
        }
        other => panic!("no write written for {other}"),
    }
    let key = if method == "ApiKeyService/RevokeApiKey" {
        create_key(admin, &sa, "doomed").await.name
    } else {
        String::new()
    };
    let before = outbox::last_id(server.database_url()).await;
    macro_rules! h {
        ($m:expr) => {
            with_header($m, "x-request-id", request_id)
        };
    }
    let (resource, result) = match method {
        "OrganizationService/CreateOrganization" => (
            parent.clone(),
            admin
                .organizations()
                .create_organization(h!(CreateOrganizationRequest {
                    organization_id: org.into(),
                    organization: Some(Organization {
                        display_name: "Org".into(),
                        ..Default::default()
                    }),
                }))
                .await
                .map(drop),
        ),
        "OrganizationService/UpdateOrganization" => (
            parent.clone(),
            admin
                .organizations()
                .update_organization(h!(UpdateOrganizationRequest {
                    organization: Some(Organization {
                        name: parent.clone(),
                        display_name: "Renamed".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                }))
                .await
                .map(drop),
        ),
        "OrganizationService/DeleteOrganization" => (
            parent.clone(),
            admin
                .organizations()
                .delete_organization(h!(DeleteOrganizationRequest {
                    name: parent.clone(),
                    ..Default::default()
                }))
                .await
                .map(drop),
        ),
        "UserService/CreateUser" => (
            user.clone(),
            admin
                .users()
                .create_user(h!(CreateUserRequest {
                    parent: parent.clone(),
                    user_id: "u".into(),
                    user: Some(User {
                        display_name: "U".into(),
                        email: "u@example.com".into(),
                        roles: roles(&["viewer"]),
                        ..Default::default()
                    }),
                }))
                .await
                .map(drop),
        ),
        "UserService/UpdateUser" => (
            user.clone(),
            admin
                .users()
                .update_user(h!(UpdateUserRequest {
                    user: Some(User {
                        name: user.clone(),
                        display_name: "Renamed".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                }))
                .await
                .map(drop),
        ),
        "UserService/DeleteUser" => (
            user.clone(),
            admin
                .users()
                .delete_user(h!(DeleteUserRequest {
                    name: user.clone(),
                    etag: String::new(),
                }))
                .await
                .map(drop),
        ),
        "UserService/SetPassword" => (
            user.clone(),
            admin
                .users()
                .set_password(h!(SetPasswordRequest {
                    name: user.clone(),
                    password: "correct horse battery staple".into(),
                }))
                .await
                .map(drop),
        ),
        "ServiceAccountService/CreateServiceAccount" => (
            sa.clone(),
            admin
                .service_accounts()
                .create_service_account(h!(CreateServiceAccountRequest {
                    parent: parent.clone(),
                    service_account_id: "s".into(),
                    service_account: Some(ServiceAccount {
                        display_name: "S".into(),
                        ..Default::default()
                    }),
                }))
                .await
                .map(drop),
        ),
        "ServiceAccountService/UpdateServiceAccount" => (
            sa.clone(),
            admin
                .service_accounts()
                .update_service_account(h!(UpdateServiceAccountRequest {
                    service_account: Some(ServiceAccount {
                        name: sa.clone(),
                        description: "Changed".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["description"]),
                }))
                .await
                .map(drop),
        ),
        "ServiceAccountService/DeleteServiceAccount" => (
            sa.clone(),
            admin
                .service_accounts()
                .delete_service_account(h!(DeleteServiceAccountRequest {
                    name: sa.clone(),
                    etag: String::new(),
                }))
                .await
                .map(drop),
        ),
        "ApiKeyService/CreateApiKey" => {
            let created = admin
                .api_keys()
                .create_api_key(h!(CreateApiKeyRequest {
                    parent: sa.clone(),
                    api_key: Some(ApiKey {
                        display_name: "k".into(),
                        ..Default::default()
                    }),
                }))
                .await;
            match created {
                Ok(k) => (k.into_inner().name, Ok(())),
                Err(s) => (String::new(), Err(s)),
            }
        }
        "ApiKeyService/RevokeApiKey" => (
            key.clone(),
            admin
                .api_keys()
                .revoke_api_key(h!(RevokeApiKeyRequest {
                    name: key.clone(),
                    etag: String::new(),
                }))
                .await
                .map(drop),
        ),
        "OAuthClientService/CreateOAuthClient" => (
            oauth_client.clone(),
            oauth_clients(admin)
                .create_o_auth_client(h!(CreateOAuthClientRequest {
                    parent: parent.clone(),
                    oauth_client_id: "c".into(),
                    oauth_client: Some(OAuthClient {
                        display_name: "C".into(),
                        client_type: ClientType::Confidential as i32,
                        grant_types: vec!["client_credentials".into()],
                        service_account: sa.clone(),
                        ..Default::default()
                    }),
                }))
                .await
                .map(drop),
        ),
        "OAuthClientService/UpdateOAuthClient" => (
            oauth_client.clone(),
            oauth_clients(admin)
                .update_o_auth_client(h!(UpdateOAuthClientRequest {
                    oauth_client: Some(OAuthClient {
                        name: oauth_client.clone(),
                        display_name: "Renamed".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                }))
                .await
                .map(drop),
        ),
        "OAuthClientService/DeleteOAuthClient" => (
            oauth_client.clone(),
            oauth_clients(admin)
                .delete_o_auth_client(h!(DeleteOAuthClientRequest {
                    name: oauth_client.clone(),
                    etag: String::new(),
                }))
                .await
                .map(drop),
        ),
        "OAuthClientService/RotateOAuthClientSecret" => (
            oauth_client.clone(),
            oauth_clients(admin)
                .rotate_o_auth_client_secret(h!(RotateOAuthClientSecretRequest {
                    name: oauth_client.clone(),
                    ..Default::default()
                }))
                .await
                .map(drop),
        ),
        "RateLimitPolicyService/CreateRateLimitPolicy" => (
            policy.clone(),
            admin
                .rate_limit_policies()
                .create_rate_limit_policy(h!(CreateRateLimitPolicyRequest {
                    parent: parent.clone(),
                    rate_limit_policy_id: "p".into(),
                    rate_limit_policy: Some(RateLimitPolicy {
                        quota: Some(RateLimitQuota {
                            limit: 1000,
                            period: rate_limit_quota::Period::Day as i32,
                        }),
                        ..Default::default()
                    }),
                }))
                .await
                .map(drop),
        ),
        "RateLimitPolicyService/UpdateRateLimitPolicy" => (
            policy.clone(),
            admin
                .rate_limit_policies()
                .update_rate_limit_policy(h!(UpdateRateLimitPolicyRequest {
                    rate_limit_policy: Some(RateLimitPolicy {
                        name: policy.clone(),
                        display_name: "Renamed".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                }))
                .await
                .map(drop),
        ),
        "WebhookService/CreateWebhook" => (
            hook.clone(),
            admin
                .webhooks()
                .create_webhook(h!(CreateWebhookRequest {
                    parent: parent.clone(),
                    webhook_id: "h".into(),
                    webhook: Some(webhook()),
                }))
                .await
                .map(drop),
        ),
        "WebhookService/UpdateWebhook" => (
            hook.clone(),
            admin
                .webhooks()
                .update_webhook(h!(UpdateWebhookRequest {
                    webhook: Some(Webhook {
                        name: hook.clone(),
                        display_name: "Renamed".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                }))
                .await
                .map(drop),
        ),
        "WebhookService/DeleteWebhook" => (
            hook.clone(),
            admin
                .webhooks()
                .delete_webhook(h!(DeleteWebhookRequest {
                    name: hook.clone(),
                    etag: String::new(),
                }))
                .await
                .map(drop),
        ),
        "WebhookService/RotateWebhookSecret" => (
            hook.clone(),
            admin
                .webhooks()
                .rotate_webhook_secret(h!(RotateWebhookSecretRequest {
                    name: hook.clone(),
                    ..Default::default()
                }))
                .await
                .map(drop),
        ),
        "RateLimitPolicyService/DeleteRateLimitPolicy" => (
            policy.clone(),
            admin
                .rate_limit_policies()
                .delete_rate_limit_policy(h!(DeleteRateLimitPolicyRequest {
                    name: policy.clone(),
                    etag: String::new(),
                }))
                .await
                .map(drop),
        ),
        other => panic!("no write written for {other}"),
    };
    (before, resource, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_appends_exactly_one_typed_event() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        for (i, (method, kind)) in ROWS.iter().enumerate() {
            let org = format!("o{i}");
            let request_id = format!("req-{i}-{}", method.replace('/', "."));
            let (before, resource, result) = write(server, &admin, method, &org, &request_id).await;
            result.unwrap_or_else(|s| panic!("{method}: {s:?}"));
            let rows = outbox::rows_after(server.database_url(), before).await;
            assert_eq!(rows.len(), 1, "{method} appended {rows:#?}");
            let row = &rows[0];
            let e = &row.event;
            assert_eq!(e.r#type, *kind, "{method}");
            assert_eq!(row.event_type, *kind, "{method}");
            assert_eq!(e.resource, resource, "{method}");
            assert_eq!(e.organization, org_name(&org), "{method}");
            assert_eq!(row.org_id, org, "{method}");
            assert_eq!(e.actor, ADMIN, "{method}");
            assert_eq!(row.actor, ADMIN, "{method}");
            assert_eq!(e.request_id, request_id, "{method}");
            assert_eq!(row.request_id, request_id, "{method}");
            assert!(e.time.is_some(), "{method}");
            // The resource after the change is carried whole, and is the
            // resource the event names.
            let after_name = match e.after.as_ref().expect("a resource after the change") {
                After::Org(o) => &o.name,
                After::User(u) => &u.name,
                After::ServiceAccount(s) => &s.name,
                After::ApiKey(k) => {
                    assert!(k.secret.is_empty(), "an event must never carry a secret");
                    &k.name
                }
                After::OauthClient(c) => {
                    assert!(c.secret.is_empty(), "an event must never carry a secret");
                    &c.name
                }
                After::SigningKey(k) => &k.name,
                After::RateLimitPolicy(p) => &p.name,
                After::RevokedToken(t) => &t.client,
                After::Webhook(w) => {
                    assert!(w.secret.is_empty(), "an event must never carry a secret");
                    &w.name
                }
            };
            assert_eq!(after_name, &resource, "{method}");
            if let (After::User(u), "user.updated") = (e.after.as_ref().unwrap(), *kind) {
                assert_eq!(u.display_name, "Renamed", "the state after the change");
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_append_nothing_and_ids_are_assigned() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let user = create_user(&admin, "acme", "u", &["viewer"]).await;
        let before = outbox::last_id(server.database_url()).await;
        // A stale etag, a duplicate, a missing parent, a refused caller.
        admin
            .users()
            .update_user(UpdateUserRequest {
                user: Some(User {
                    name: user.name.clone(),
                    display_name: "x".into(),
                    etag: "\"stale\"".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
            })
            .await
            .expect_code(Code::Aborted);
        admin
            .users()
            .create_user(CreateUserRequest {
                parent: org_name("acme"),
                user_id: "u".into(),
                user: Some(User {
                    display_name: "Again".into(),
                    email: "again@example.com".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect_code(Code::AlreadyExists);
        admin
            .service_accounts()
            .create_service_account(CreateServiceAccountRequest {
                parent: org_name("nowhere"),
                service_account_id: "s".into(),
                service_account: Some(ServiceAccount {
                    display_name: "S".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect_code(Code::NotFound);
        admin
            .organizations()
            .delete_organization(DeleteOrganizationRequest {
                name: org_name("acme"),
                ..Default::default()
            })
            .await
            .expect_code(Code::FailedPrecondition);
        let viewer = server.client(
            &create_key(
                &admin,
                &create_sa(&admin, "acme", "v", &["viewer"]).await.name,
                "v",
            )
            .await
            .secret,
        );
        let before_refused = outbox::last_id(server.database_url()).await;
        viewer
            .users()
            .delete_user(DeleteUserRequest {
                name: user.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_code(Code::PermissionDenied);
        let after = outbox::rows_after(server.database_url(), before).await;
        assert!(
            after
                .iter()
                .all(|r| r.event.r#type == "serviceAccount.created"
                    || r.event.r#type == "apiKey.created"),
            "only the fixtures' events: {after:#?}"
        );
        assert_eq!(
            outbox::last_id(server.database_url()).await,
            before_refused,
            "a refused delete appended an event"
        );

        // Without x-request-id the server assigns one.
        admin
            .users()
            .update_user(UpdateUserRequest {
                user: Some(User {
                    name: user.name.clone(),
                    display_name: "Assigned".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
            })
            .await
            .expect_ok();
        let rows = outbox::rows_after(server.database_url(), before_refused).await;
        assert_eq!(rows.len(), 1);
        let id = &rows[0].event.request_id;
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        Ok(())
    })
    .await;
}
