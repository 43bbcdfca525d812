//! Regressions of the hostile-client probe (`security-probe-1.md`) that
//! live in the store's write path: a key never grants more than its minter
//! held (D2); a key cannot outlive an owner deleted concurrently (D5); a
//! create racing its organization's forced delete is NOT_FOUND, never
//! INTERNAL (D8); the last platform admin cannot be removed (D10). The
//! races run enough trials to have failed before the fix (the probe saw
//! 5–7 of 20 and 18–36 of 400); they matter on PostgreSQL, where writers
//! run in parallel, and run on SQLite too.

use std::collections::HashMap;

use tollgate_client::tonic::Status;
use tollgate_e2e::{
    Client, Code, TestServer, concurrently, each_backend,
    fixtures::{create_key, create_org, create_sa, create_user, mask, org_name, roles, sa_name},
    outbox,
    rpc::RpcResult as _,
    v1::{
        ApiKey, CreateApiKeyRequest, CreateServiceAccountRequest, CreateUserRequest,
        DeleteOrganizationRequest, DeleteServiceAccountRequest, DeleteUserRequest,
        ListApiKeysRequest, Organization, ServiceAccount, UpdateOrganizationRequest,
        UpdateServiceAccountRequest, UpdateUserRequest, User, service_account,
    },
};

fn code<T>(r: &Result<T, Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

fn new_user(org: &str, id: &str, role_names: &[&str]) -> CreateUserRequest {
    CreateUserRequest {
        parent: org_name(org),
        user_id: id.into(),
        user: Some(User {
            display_name: id.into(),
            email: format!("{id}@example.com"),
            roles: roles(role_names),
            ..Default::default()
        }),
    }
}

/// D2: an editor mints a key for a viewer, who is later promoted to admin.
/// The minted key keeps the editor's power; the owner's own key has the
/// admin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_never_grants_more_than_its_minter_held() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let editor_sa = create_sa(&admin, "acme", "ed", &["editor"]).await;
        let editor = server.client(&create_key(&admin, &editor_sa.name, "ed").await.secret);
        let dana = create_user(&admin, "acme", "dana", &["viewer"]).await;
        let minted = create_key(&editor, &dana.name, "laptop").await;
        assert_eq!(minted.creator, editor_sa.name, "the key records its minter");
        let own = create_key(&admin, &dana.name, "dana's own").await;
        assert_eq!(own.creator, "organizations/root/serviceAccounts/admin");

        // A routine promotion.
        admin
            .users()
            .update_user(UpdateUserRequest {
                user: Some(User {
                    name: dana.name.clone(),
                    roles: roles(&["admin"]),
                    ..Default::default()
                }),
                update_mask: mask(&["roles"]),
            })
            .await
            .expect_ok();

        let by_minted = server.client(&minted.secret);
        by_minted
            .users()
            .create_user(new_user("acme", "mallory", &["admin"]))
            .await
            .expect_code(Code::PermissionDenied);
        by_minted
            .organizations()
            .update_organization(UpdateOrganizationRequest {
                organization: Some(Organization {
                    name: org_name("acme"),
                    display_name: "Pwned".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
            })
            .await
            .expect_code(Code::PermissionDenied);
        // It still does what an editor may.
        by_minted
            .users()
            .create_user(new_user("acme", "intern", &["viewer"]))
            .await
            .expect_ok();

        // The key the platform admin minted follows the promotion.
        server
            .client(&own.secret)
            .users()
            .create_user(new_user("acme", "deputy", &["admin"]))
            .await
            .expect_ok();
        Ok(())
    })
    .await;
}

/// D5: CreateApiKey racing DeleteServiceAccount leaves no key behind, and
/// no `apiKey.created` follows the owner's `serviceAccount.deleted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_outlive_an_owner_deleted_concurrently() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "race", "Race").await;
        let start = outbox::last_id(server.database_url()).await;
        let trials = 20;
        for t in 0..trials {
            let id = format!("sa{t}");
            let name = sa_name("race", &id);
            create_sa(&admin, "race", &id, &["viewer"]).await;
            let results = concurrently(11, |i| {
                let admin = admin.clone();
                let name = name.clone();
                async move {
                    if i == 5 {
                        code(
                            &admin
                                .service_accounts()
                                .delete_service_account(DeleteServiceAccountRequest {
                                    name,
                                    etag: String::new(),
                                })
                                .await,
                        )
                    } else {
                        code(
                            &admin
                                .api_keys()
                                .create_api_key(CreateApiKeyRequest {
                                    parent: name,
                                    api_key: Some(ApiKey::default()),
                                })
                                .await,
                        )
                    }
                }
            })
            .await;
            for (i, c) in results.iter().enumerate() {
                assert!(
                    matches!(c, Code::Ok | Code::NotFound),
                    "trial {t} call {i}: {c:?}"
                );
            }
            // Same name, new uid: it must start with no keys.
            admin
                .service_accounts()
                .create_service_account(CreateServiceAccountRequest {
                    parent: org_name("race"),
                    service_account_id: id.clone(),
                    service_account: Some(ServiceAccount {
                        display_name: "again".into(),
                        ..Default::default()
                    }),
                })
                .await
                .expect_ok();
            let left = admin
                .api_keys()
                .list_api_keys(ListApiKeysRequest {
                    parent: name.clone(),
                    ..Default::default()
                })
                .await
                .expect_ok();
            assert!(
                left.api_keys.is_empty(),
                "trial {t}: keys of the deleted {name} survived: {left:?}"
            );
        }
        // In the outbox, each owner's deletion comes after all its keys.
        let mut deleted: HashMap<String, bool> = HashMap::new();
        for row in outbox::rows_after(server.database_url(), start).await {
            let e = row.event;
            match e.r#type.as_str() {
                "serviceAccount.deleted" => {
                    deleted.insert(e.resource, true);
                }
                "serviceAccount.created" => {
                    deleted.remove(&e.resource);
                }
                "apiKey.created" => {
                    let owner = e.resource.split("/apiKeys/").next().unwrap_or_default();
                    assert!(
                        !deleted.contains_key(owner),
                        "{} was created after its owner was deleted",
                        e.resource
                    );
                }
                _ => {}
            }
        }
        Ok(())
    })
    .await;
}

/// D8: CreateUser racing a forced DeleteOrganization is OK or NOT_FOUND,
/// never INTERNAL, and no user is created in a deleted organization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_racing_an_organization_delete_are_not_found() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let start = outbox::last_id(server.database_url()).await;
        let mut codes: HashMap<String, usize> = HashMap::new();
        for t in 0..10 {
            let org = format!("doomed{t}");
            create_org(&admin, &org, "Doomed").await;
            let results = concurrently(41, |i| {
                let admin = admin.clone();
                let org = org.clone();
                async move {
                    if i == 10 {
                        let r = admin
                            .organizations()
                            .delete_organization(DeleteOrganizationRequest {
                                name: org_name(&org),
                                etag: String::new(),
                                force: true,
                            })
                            .await;
                        ("DeleteOrganization", code(&r))
                    } else {
                        let r = admin
                            .users()
                            .create_user(new_user(&org, &format!("u{i}"), &[]))
                            .await;
                        ("CreateUser", code(&r))
                    }
                }
            })
            .await;
            for (what, c) in results {
                *codes.entry(format!("{what}:{c:?}")).or_default() += 1;
                assert!(
                    matches!(c, Code::Ok | Code::NotFound),
                    "{what} in trial {t}: {c:?}"
                );
            }
        }
        assert_eq!(codes.get("DeleteOrganization:Ok"), Some(&10), "{codes:?}");
        // No member was created after its organization's deletion.
        let mut gone: Vec<String> = Vec::new();
        for row in outbox::rows_after(server.database_url(), start).await {
            let e = row.event;
            match e.r#type.as_str() {
                "organization.deleted" => gone.push(e.organization),
                "user.created" => assert!(
                    !gone.contains(&e.organization),
                    "{} created after its organization was deleted",
                    e.resource
                ),
                _ => {}
            }
        }
        Ok(())
    })
    .await;
}

/// D10: the last active admin of `root` cannot be deleted, disabled or
/// demoted; with a second admin it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_platform_admin_stays() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let me = sa_name("root", "admin");
        let refused = |r: Result<(), Status>, what: &str| match r {
            Err(s) if s.code() == Code::FailedPrecondition => {
                assert!(
                    s.message().contains("without an active admin"),
                    "{what}: {s:?}"
                );
            }
            other => panic!("{what}: expected FAILED_PRECONDITION, got {other:?}"),
        };
        refused(
            admin
                .service_accounts()
                .delete_service_account(DeleteServiceAccountRequest {
                    name: me.clone(),
                    etag: String::new(),
                })
                .await
                .map(drop),
            "delete",
        );
        for (what, patch, paths) in [
            (
                "disable",
                ServiceAccount {
                    name: me.clone(),
                    state: service_account::State::Disabled as i32,
                    ..Default::default()
                },
                ["state"],
            ),
            (
                "demote",
                ServiceAccount {
                    name: me.clone(),
                    roles: roles(&["viewer"]),
                    ..Default::default()
                },
                ["roles"],
            ),
        ] {
            refused(
                admin
                    .service_accounts()
                    .update_service_account(UpdateServiceAccountRequest {
                        service_account: Some(patch),
                        update_mask: mask(&paths),
                    })
                    .await
                    .map(drop),
                what,
            );
        }
        // Still a platform admin.
        create_org(&admin, "still", "Still").await;

        // With a second admin (a user), the first may step down, and then
        // the second is the last one.
        let second = create_user(&admin, "root", "ops", &["admin"]).await;
        let second_client: Client =
            server.client(&create_key(&admin, &second.name, "ops").await.secret);
        second_client
            .service_accounts()
            .update_service_account(UpdateServiceAccountRequest {
                service_account: Some(ServiceAccount {
                    name: me.clone(),
                    roles: roles(&["viewer"]),
                    ..Default::default()
                }),
                update_mask: mask(&["roles"]),
            })
            .await
            .expect_ok();
        refused(
            second_client
                .users()
                .delete_user(DeleteUserRequest {
                    name: second.name.clone(),
                    etag: String::new(),
                })
                .await
                .map(drop),
            "delete the new last admin",
        );
        Ok(())
    })
    .await;
}
