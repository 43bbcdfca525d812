//! OrganizationService end to end: CRUD, field masks, etags, validation,
//! the protected root organization, deletes with members, and concurrent
//! creates of one id.

use std::sync::Arc;

use tokio::sync::Barrier;
use tollgate_client::tonic_types::StatusExt as _;
use tollgate_e2e::{
    Code, TestServer, concurrently, each_backend,
    fixtures::{
        create_key, create_org, create_sa, create_user, mask, micros, org_name, probe, user_name,
    },
    rpc::{RpcResult as _, violated_fields},
    v1::{
        CreateOrganizationRequest, DeleteOrganizationRequest, GetOrganizationRequest,
        GetUserRequest, ListOrganizationsRequest, ListServiceAccountsRequest, ListUsersRequest,
        Organization, UpdateOrganizationRequest, organization::State,
    },
};

fn get(name: &str) -> GetOrganizationRequest {
    GetOrganizationRequest { name: name.into() }
}

fn delete(name: &str, etag: &str, force: bool) -> DeleteOrganizationRequest {
    DeleteOrganizationRequest {
        name: name.into(),
        etag: etag.into(),
        force,
    }
}

fn update(org: Organization, paths: &[&str]) -> UpdateOrganizationRequest {
    UpdateOrganizationRequest {
        organization: Some(org),
        update_mask: if paths.is_empty() { None } else { mask(paths) },
    }
}

async fn list_names(server: &TestServer) -> Vec<String> {
    server
        .admin()
        .organizations()
        .list_organizations(ListOrganizationsRequest::default())
        .await
        .expect_ok()
        .organizations
        .into_iter()
        .map(|o| o.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_list_update_delete() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let mut orgs = admin.organizations();

        let acme = create_org(&admin, "acme", "Acme").await;
        assert_eq!(acme.name, "organizations/acme");
        assert_eq!(acme.display_name, "Acme");
        assert_eq!(acme.state, State::Active as i32, "ACTIVE on creation");
        assert!(!acme.uid.is_empty() && !acme.etag.is_empty(), "{acme:?}");
        assert!(acme.create_time.is_some() && acme.update_time.is_some());

        // Get returns exactly what Create returned.
        assert_eq!(
            orgs.get_organization(get("organizations/acme"))
                .await
                .expect_ok(),
            acme
        );

        // An empty id makes the server assign one (a UUID).
        let assigned = orgs
            .create_organization(CreateOrganizationRequest {
                organization_id: String::new(),
                organization: Some(Organization {
                    display_name: "Assigned".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect_ok();
        let id = assigned
            .name
            .strip_prefix("organizations/")
            .expect("an org name");
        assert_eq!(id.len(), 36, "a UUID id: {id}");
        assert_eq!(id.matches('-').count(), 4, "a UUID id: {id}");
        assert_ne!(assigned.uid, acme.uid);
        assert_eq!(
            orgs.get_organization(get(&assigned.name)).await.expect_ok(),
            assigned
        );

        // The platform admin lists every organization, in name order.
        let mut expected = vec![acme.name.clone(), assigned.name.clone(), org_name("root")];
        expected.sort();
        assert_eq!(list_names(server).await, expected);

        // Update with a mask changes the display name and the etag only.
        let renamed = orgs
            .update_organization(update(
                Organization {
                    name: acme.name.clone(),
                    display_name: "Acme Corp".into(),
                    ..Default::default()
                },
                &["display_name"],
            ))
            .await
            .expect_ok();
        assert_eq!(renamed.display_name, "Acme Corp");
        assert_eq!(renamed.state, State::Active as i32);
        assert_eq!(renamed.uid, acme.uid);
        assert_eq!(renamed.create_time, acme.create_time);
        assert_ne!(renamed.etag, acme.etag, "the etag changes on every update");
        assert!(micros(renamed.update_time.as_ref()) >= micros(acme.update_time.as_ref()));
        assert_eq!(
            orgs.get_organization(get(&acme.name)).await.expect_ok(),
            renamed
        );

        // Suspend and reactivate.
        let suspended = orgs
            .update_organization(update(
                Organization {
                    name: acme.name.clone(),
                    state: State::Suspended as i32,
                    ..Default::default()
                },
                &["state"],
            ))
            .await
            .expect_ok();
        assert_eq!(suspended.state, State::Suspended as i32);
        assert_eq!(suspended.display_name, "Acme Corp");

        // Delete with the current etag; then it is gone everywhere.
        orgs.delete_organization(delete(&acme.name, &suspended.etag, false))
            .await
            .expect_ok();
        orgs.get_organization(get(&acme.name))
            .await
            .expect_code(Code::NotFound);
        assert!(!list_names(server).await.contains(&acme.name));
        orgs.delete_organization(delete(&acme.name, "", false))
            .await
            .expect_code(Code::NotFound);
        orgs.update_organization(update(
            Organization {
                name: acme.name.clone(),
                display_name: "Ghost".into(),
                ..Default::default()
            },
            &[],
        ))
        .await
        .expect_code(Code::NotFound);

        // The id can be used again, but the uid is never reused and an
        // etag of the old organization does not match the new one.
        let again = create_org(&admin, "acme", "Acme again").await;
        assert_ne!(again.uid, acme.uid);
        assert_ne!(again.etag, acme.etag);
        orgs.delete_organization(delete(&again.name, &acme.etag, false))
            .await
            .expect_code(Code::Aborted);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_masks_and_etags() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let mut orgs = admin.organizations();
        let created = create_org(&admin, "masks", "Before").await;
        let name = created.name.clone();

        // Only masked fields change, even when others are populated.
        let v2 = orgs
            .update_organization(update(
                Organization {
                    name: name.clone(),
                    display_name: "After".into(),
                    state: State::Suspended as i32,
                    ..Default::default()
                },
                &["display_name"],
            ))
            .await
            .expect_ok();
        assert_eq!(v2.display_name, "After");
        assert_eq!(v2.state, State::Active as i32, "state was not in the mask");

        // An empty mask updates the populated fields only.
        let v3 = orgs
            .update_organization(update(
                Organization {
                    name: name.clone(),
                    state: State::Suspended as i32,
                    ..Default::default()
                },
                &[],
            ))
            .await
            .expect_ok();
        assert_eq!(v3.state, State::Suspended as i32);
        assert_eq!(
            v3.display_name, "After",
            "an empty display name is not populated"
        );

        // Unknown, immutable and output-only paths are refused and change
        // nothing.
        for path in ["uid", "name", "create_time", "etag", "colour", ""] {
            let s = orgs
                .update_organization(update(
                    Organization {
                        name: name.clone(),
                        display_name: "Refused".into(),
                        ..Default::default()
                    },
                    &["display_name", path],
                ))
                .await
                .expect_invalid("update_mask");
            assert!(s.message().contains("update_mask"), "{s:?}");
        }
        assert_eq!(orgs.get_organization(get(&name)).await.expect_ok(), v3);

        // `*` replaces every mutable field, so an unset state is invalid.
        orgs.update_organization(update(
            Organization {
                name: name.clone(),
                display_name: "Star".into(),
                ..Default::default()
            },
            &["*"],
        ))
        .await
        .expect_invalid("organization.state");
        let v4 = orgs
            .update_organization(update(
                Organization {
                    name: name.clone(),
                    display_name: "Star".into(),
                    state: State::Active as i32,
                    ..Default::default()
                },
                &["*"],
            ))
            .await
            .expect_ok();
        assert_eq!(
            (v4.display_name.as_str(), v4.state),
            ("Star", State::Active as i32)
        );

        // A stale etag is ABORTED on update and delete; nothing changes.
        for stale in [&created.etag, &v2.etag, &v3.etag] {
            orgs.update_organization(update(
                Organization {
                    name: name.clone(),
                    display_name: "Lost update".into(),
                    etag: stale.clone(),
                    ..Default::default()
                },
                &["display_name"],
            ))
            .await
            .expect_code(Code::Aborted);
            orgs.delete_organization(delete(&name, stale, false))
                .await
                .expect_code(Code::Aborted);
        }
        assert_eq!(orgs.get_organization(get(&name)).await.expect_ok(), v4);

        // The current etag works, and the next one is needed afterwards.
        let v5 = orgs
            .update_organization(update(
                Organization {
                    name: name.clone(),
                    display_name: "Fresh".into(),
                    etag: v4.etag.clone(),
                    ..Default::default()
                },
                &["display_name"],
            ))
            .await
            .expect_ok();
        assert_eq!(v5.display_name, "Fresh");
        orgs.delete_organization(delete(&name, &v4.etag, false))
            .await
            .expect_code(Code::Aborted);
        orgs.delete_organization(delete(&name, &v5.etag, false))
            .await
            .expect_ok();
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_name_the_field() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let mut orgs = admin.organizations();
        let create = |id: &str, display: &str| CreateOrganizationRequest {
            organization_id: id.into(),
            organization: Some(Organization {
                display_name: display.into(),
                ..Default::default()
            }),
        };

        let too_long = "a".repeat(64);
        for bad in [
            "Acme", "1acme", "-acme", "acme-", "ac_me", "ac.me", "ac me", "é", &too_long,
        ] {
            orgs.create_organization(create(bad, "Fine"))
                .await
                .expect_invalid("organization_id");
        }
        let longest = "a".repeat(63);
        create_org(&admin, &longest, "Longest id").await;

        let long_name = "x".repeat(201);
        for bad in ["", "   ", &long_name, "tab\u{7}bell"] {
            orgs.create_organization(create("fine", bad))
                .await
                .expect_invalid("organization.display_name");
        }
        create_org(&admin, "widest", &"é".repeat(200)).await;

        // No organization message at all: its required display name is
        // missing.
        orgs.create_organization(CreateOrganizationRequest {
            organization_id: "empty".into(),
            organization: None,
        })
        .await
        .expect_invalid("organization.display_name");

        // A settable state only.
        orgs.create_organization(CreateOrganizationRequest {
            organization_id: "stateful".into(),
            organization: Some(Organization {
                display_name: "S".into(),
                state: 7,
                ..Default::default()
            }),
        })
        .await
        .expect_invalid("organization.state");

        // Every violation is reported at once.
        let s = orgs
            .create_organization(create("Bad_Id", ""))
            .await
            .expect_code(Code::InvalidArgument);
        let mut fields = violated_fields(&s);
        fields.sort();
        assert_eq!(fields, ["organization.display_name", "organization_id"]);

        // Nothing invalid was stored.
        assert_eq!(
            list_names(server).await,
            [org_name(&longest), org_name("root"), org_name("widest")]
        );

        for bad in [
            "",
            "acme",
            "organizations/",
            "organizations/Acme",
            "organizations/acme/",
            "organizations/acme/users/x",
            "projects/acme",
            "/organizations/acme",
        ] {
            orgs.get_organization(get(bad)).await.expect_invalid("name");
            orgs.delete_organization(delete(bad, "", false))
                .await
                .expect_invalid("name");
            orgs.update_organization(update(
                Organization {
                    name: bad.into(),
                    display_name: "X".into(),
                    ..Default::default()
                },
                &[],
            ))
            .await
            .expect_invalid("organization.name");
        }
        orgs.update_organization(UpdateOrganizationRequest {
            organization: None,
            update_mask: None,
        })
        .await
        .expect_invalid("organization");
        orgs.list_organizations(ListOrganizationsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .expect_invalid("page_size");

        // Unknown but well-formed: NOT_FOUND.
        orgs.get_organization(get("organizations/nowhere"))
            .await
            .expect_code(Code::NotFound);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_ids_are_already_exists() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let first = create_org(&admin, "dup", "First").await;
        admin
            .organizations()
            .create_organization(CreateOrganizationRequest {
                organization_id: "dup".into(),
                organization: Some(Organization {
                    display_name: "Second".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect_code(Code::AlreadyExists);
        // The loser changed nothing.
        assert_eq!(
            admin
                .organizations()
                .get_organization(get("organizations/dup"))
                .await
                .expect_ok(),
            first
        );
        admin
            .organizations()
            .create_organization(CreateOrganizationRequest {
                organization_id: "root".into(),
                organization: Some(Organization {
                    display_name: "Usurper".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect_code(Code::AlreadyExists);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_cannot_be_deleted_or_suspended() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let mut orgs = admin.organizations();
        let root = orgs
            .get_organization(get("organizations/root"))
            .await
            .expect_ok();
        assert_eq!(root.state, State::Active as i32);

        for force in [false, true] {
            let s = orgs
                .delete_organization(delete("organizations/root", "", force))
                .await
                .expect_code(Code::FailedPrecondition);
            assert!(
                s.get_details_precondition_failure().is_some(),
                "FAILED_PRECONDITION carries a PreconditionFailure: {s:?}"
            );
        }
        orgs.update_organization(update(
            Organization {
                name: root.name.clone(),
                state: State::Suspended as i32,
                ..Default::default()
            },
            &["state"],
        ))
        .await
        .expect_code(Code::FailedPrecondition);

        // Still there, still active, and the admin key still works.
        assert_eq!(
            orgs.get_organization(get("organizations/root"))
                .await
                .expect_ok(),
            root
        );
        assert_eq!(probe(&admin, "root").await, Code::Ok);

        // Renaming it is fine.
        let renamed = orgs
            .update_organization(update(
                Organization {
                    name: root.name.clone(),
                    display_name: "Platform".into(),
                    ..Default::default()
                },
                &["display_name"],
            ))
            .await
            .expect_ok();
        assert_eq!(renamed.display_name, "Platform");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_members_needs_force() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let mut orgs = admin.organizations();
        let doomed = create_org(&admin, "doomed", "Doomed").await;
        let user = create_user(&admin, "doomed", "ursula", &["admin"]).await;
        let user_key = create_key(&admin, &user.name, "ursula's").await.secret;
        let sa = create_sa(&admin, "doomed", "robot", &["editor"]).await;
        let sa_key = create_key(&admin, &sa.name, "robot's").await.secret;
        let member = server.client(&user_key);
        assert_eq!(probe(&member, "doomed").await, Code::Ok);
        assert_eq!(probe(&server.client(&sa_key), "doomed").await, Code::Ok);

        let s = orgs
            .delete_organization(delete(&doomed.name, "", false))
            .await
            .expect_code(Code::FailedPrecondition);
        assert!(s.get_details_precondition_failure().is_some(), "{s:?}");
        // Refused means untouched.
        assert_eq!(
            orgs.get_organization(get(&doomed.name)).await.expect_ok(),
            doomed
        );
        let users = admin
            .users()
            .list_users(ListUsersRequest {
                parent: doomed.name.clone(),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert_eq!(users.users.len(), 1);
        assert_eq!(probe(&member, "doomed").await, Code::Ok);

        orgs.delete_organization(delete(&doomed.name, &doomed.etag, true))
            .await
            .expect_ok();
        orgs.get_organization(get(&doomed.name))
            .await
            .expect_code(Code::NotFound);
        admin
            .users()
            .get_user(GetUserRequest {
                name: user_name("doomed", "ursula"),
            })
            .await
            .expect_code(Code::NotFound);
        admin
            .users()
            .list_users(ListUsersRequest {
                parent: doomed.name.clone(),
                ..Default::default()
            })
            .await
            .expect_code(Code::NotFound);
        // The members' keys died with them.
        assert_eq!(probe(&member, "doomed").await, Code::Unauthenticated);
        assert_eq!(
            probe(&server.client(&sa_key), "root").await,
            Code::Unauthenticated
        );

        // A new organization with the same id starts empty, and the old
        // keys stay dead.
        create_org(&admin, "doomed", "Reborn").await;
        let users = admin
            .users()
            .list_users(ListUsersRequest {
                parent: doomed.name.clone(),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert!(users.users.is_empty(), "{users:?}");
        let sas = admin
            .service_accounts()
            .list_service_accounts(ListServiceAccountsRequest {
                parent: doomed.name.clone(),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert!(sas.service_accounts.is_empty(), "{sas:?}");
        assert_eq!(probe(&member, "doomed").await, Code::Unauthenticated);

        // An empty organization needs no force.
        orgs.delete_organization(delete(&doomed.name, "", false))
            .await
            .expect_ok();
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_id() {
    const TASKS: usize = 16;
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let barrier = Arc::new(Barrier::new(TASKS));
        let results = concurrently(TASKS, |i| {
            let admin = admin.clone();
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                admin
                    .organizations()
                    .create_organization(CreateOrganizationRequest {
                        organization_id: "race".into(),
                        organization: Some(Organization {
                            display_name: format!("Racer {i}"),
                            ..Default::default()
                        }),
                    })
                    .await
            }
        })
        .await;
        let winners: Vec<&Organization> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| r.get_ref())
            .collect();
        let losers: Vec<Code> = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|s| s.code())
            .collect();
        assert_eq!(winners.len(), 1, "exactly one create wins: {results:?}");
        assert_eq!(losers, vec![Code::AlreadyExists; TASKS - 1], "{results:?}");
        let stored = admin
            .organizations()
            .get_organization(get("organizations/race"))
            .await
            .expect_ok();
        assert_eq!(&stored, winners[0], "the winner's write is the one stored");

        // Distinct ids at once all succeed: concurrent writers queue, they
        // do not fail.
        let results = concurrently(TASKS, |i| {
            let admin = admin.clone();
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                admin
                    .users()
                    .create_user(tollgate_e2e::v1::CreateUserRequest {
                        parent: "organizations/race".into(),
                        user_id: format!("runner-{i:02}"),
                        user: Some(tollgate_e2e::v1::User {
                            display_name: format!("Runner {i}"),
                            email: format!("runner{i}@example.com"),
                            ..Default::default()
                        }),
                    })
                    .await
                    .map(|r| r.into_inner().name)
                    .map_err(|s| (s.code(), s.message().to_owned()))
            }
        })
        .await;
        let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
        assert!(failed.is_empty(), "concurrent creates failed: {failed:?}");
        let listed = admin
            .users()
            .list_users(ListUsersRequest {
                parent: "organizations/race".into(),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert_eq!(listed.users.len(), TASKS);
        Ok(())
    })
    .await;
}
