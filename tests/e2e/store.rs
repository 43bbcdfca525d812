//! Repository tests of the one write path (`store::versioned`) on every
//! backend: etag conflicts, guards, revision-guarded concurrent updates
//! (exactly one wins), deletes, and the events each leaves. They drive the
//! `Store` directly, on the database of a running test server, so a failure
//! lands next to its cause rather than behind the API.

use std::sync::Arc;

use tollgate_e2e::{TestServer, concurrently, each_backend, outbox};
use tollgate_server::{
    Config,
    domain::{
        Error,
        authz::{Role, Roles},
        filter::{self, FieldType},
        names::{OrgName, PrincipalKind, PrincipalName},
        page::PageRequest,
    },
    events::{EventKind, WriteContext},
    store::{
        Store, api_keys,
        organizations::{self, NewOrganization, OrganizationChanges},
        principals::{self, NewUser, UserChanges},
    },
};

async fn store_of(server: &TestServer) -> Store {
    tollgate_server::open_store(&Config {
        database_url: server.database_url().to_owned(),
        db_pool_size: 8,
        ..Default::default()
    })
    .await
    .expect("a second store on the test database")
}

fn ctx(id: &str) -> WriteContext {
    WriteContext::new("organizations/root/serviceAccounts/tester", id)
}

fn org(id: &str) -> OrgName {
    OrgName { org: id.into() }
}

fn user(org: &str, id: &str) -> PrincipalName {
    PrincipalName {
        org: org.into(),
        kind: PrincipalKind::User,
        id: id.into(),
    }
}

async fn new_org(store: &Store, id: &str) {
    store
        .create_organization(
            &ctx("setup"),
            NewOrganization {
                id: Some(id.into()),
                display_name: id.into(),
                state: tollgate::tollgate::v1::organization::State::Active,
            },
        )
        .await
        .expect("organization created");
}

async fn new_user(store: &Store, org: &str, id: &str, role: Role) {
    store
        .create_user(
            &ctx("setup"),
            NewUser {
                name: user(org, id),
                display_name: id.into(),
                email: format!("{id}@example.com"),
                state: 1,
                roles: Roles::new(vec![role]),
            },
        )
        .await
        .expect("user created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_check_the_etag_and_leave_one_event() {
    each_backend(async |server: &mut TestServer| {
        let store = store_of(server).await;
        new_org(&store, "acme").await;
        let current = store.get_organization("acme").await?.row.clone();
        let etag = current.to_proto().etag;
        let before = outbox::last_id(server.database_url()).await;

        // A stale etag: ABORTED, nothing written.
        let stale = store
            .update_organization(
                &ctx("stale"),
                org("acme"),
                "\"0000000000000000\"".into(),
                OrganizationChanges {
                    display_name: Some("Nope".into()),
                    state: None,
                },
            )
            .await;
        assert!(matches!(stale, Err(Error::Aborted { .. })), "{stale:?}");
        assert_eq!(outbox::last_id(server.database_url()).await, before);

        // The current etag: one revision more, one event with the context.
        let updated = store
            .update_organization(
                &ctx("fresh"),
                org("acme"),
                etag.clone(),
                OrganizationChanges {
                    display_name: Some("Acme Inc".into()),
                    state: None,
                },
            )
            .await?;
        assert_eq!(updated.revision, current.revision + 1);
        assert_ne!(updated.to_proto().etag, etag);
        let rows = outbox::rows_after(server.database_url(), before).await;
        assert_eq!(rows.len(), 1, "{rows:#?}");
        assert_eq!(
            rows[0].event.r#type,
            EventKind::OrganizationUpdated.as_str()
        );
        assert_eq!(rows[0].event.request_id, "fresh");
        assert_eq!(rows[0].actor, "organizations/root/serviceAccounts/tester");
        // The cache saw the event: the next read is the new row.
        assert_eq!(
            store.get_organization("acme").await?.row.display_name,
            "Acme Inc"
        );

        // The same etag again is stale now.
        let replay = store
            .update_organization(
                &ctx("replay"),
                org("acme"),
                etag,
                OrganizationChanges::default(),
            )
            .await;
        assert!(matches!(replay, Err(Error::Aborted { .. })), "{replay:?}");

        // A missing row is NOT_FOUND.
        let missing = store
            .update_organization(
                &ctx("x"),
                org("nowhere"),
                String::new(),
                OrganizationChanges::default(),
            )
            .await;
        assert!(
            matches!(missing, Err(Error::NotFound { .. })),
            "{missing:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_with_one_etag_exactly_one_wins() {
    each_backend(async |server: &mut TestServer| {
        let store = Arc::new(store_of(server).await);
        new_org(&store, "acme").await;
        new_user(&store, "acme", "u", Role::Viewer).await;
        let etag = store.get_user(&user("acme", "u")).await?.to_proto().etag;
        let before = outbox::last_id(server.database_url()).await;
        let results = concurrently(16, |i| {
            let store = store.clone();
            let etag = etag.clone();
            async move {
                store
                    .update_user(
                        &ctx(&format!("writer-{i}")),
                        user("acme", "u"),
                        etag,
                        |_| Ok(()),
                        UserChanges {
                            display_name: Some(format!("writer {i}")),
                            ..Default::default()
                        },
                        EventKind::UserUpdated,
                    )
                    .await
            }
        })
        .await;
        let winners: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert!(
            results
                .iter()
                .filter(|r| r.is_err())
                .all(|r| matches!(r, Err(Error::Aborted { .. }))),
            "{results:?}"
        );
        let stored = store.get_user(&user("acme", "u")).await?;
        let Ok(winner) = winners[0] else {
            unreachable!()
        };
        assert_eq!(
            stored.display_name, winner.display_name,
            "the winner's value is stored"
        );
        assert_eq!(stored.revision, 2);
        let rows = outbox::rows_after(server.database_url(), before).await;
        assert_eq!(rows.len(), 1, "one event for the one write that happened");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_guards_leave_nothing_when_refused() {
    each_backend(async |server: &mut TestServer| {
        let store = store_of(server).await;
        new_org(&store, "acme").await;
        new_user(&store, "acme", "boss", Role::Admin).await;
        let before = outbox::last_id(server.database_url()).await;

        // The guard sees the stored roles and refuses.
        let refused = store
            .delete_user(
                &ctx("guarded"),
                user("acme", "boss"),
                String::new(),
                |roles| {
                    if roles.contains(Role::Admin) {
                        Err(Error::PermissionDenied("not an admin".into()))
                    } else {
                        Ok(())
                    }
                },
            )
            .await;
        assert!(
            matches!(refused, Err(Error::PermissionDenied(_))),
            "{refused:?}"
        );
        // A wrong etag.
        let stale = store
            .delete_user(&ctx("stale"), user("acme", "boss"), "\"x\"".into(), |_| {
                Ok(())
            })
            .await;
        assert!(matches!(stale, Err(Error::Aborted { .. })), "{stale:?}");
        assert_eq!(outbox::last_id(server.database_url()).await, before);
        store.get_user(&user("acme", "boss")).await?;

        // Deleted: one event carrying the row as it was, and its keys go too.
        let owner = user("acme", "boss");
        let (key, _) = store
            .create_api_key(
                &ctx("key"),
                api_keys::NewApiKey {
                    owner: owner.clone(),
                    display_name: "k".into(),
                    expire_time: None,
                    role_cap: None,
                    scopes: Vec::new(),
                },
                |_| Ok(()),
            )
            .await?;
        let before = outbox::last_id(server.database_url()).await;
        store
            .delete_user(&ctx("delete"), owner.clone(), String::new(), |_| Ok(()))
            .await?;
        let rows = outbox::rows_after(server.database_url(), before).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].event.r#type, "user.deleted");
        let gone = store.get_api_key(&key.name()?).await;
        assert!(matches!(gone, Err(Error::NotFound { .. })), "{gone:?}");
        Ok(())
    })
    .await;
}

/// Every filterable field a List declares is matched by its query: a field
/// listed without its arm would answer INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_filter_field_is_queryable() {
    each_backend(async |server: &mut TestServer| {
        let store = store_of(server).await;
        new_org(&store, "acme").await;
        new_user(&store, "acme", "u", Role::Viewer).await;
        let text_of = |field: &str, ty: &FieldType| match ty {
            FieldType::Enum { values, name } => {
                format!("{field} = {}", name(values[0]).unwrap_or_default())
            }
            FieldType::Text => format!("{field} = \"x\""),
            FieldType::Timestamp | FieldType::OptionalTimestamp => {
                format!("{field} > \"2020-01-01T00:00:00Z\"")
            }
        };
        let page = || PageRequest::new(10, "", "q").expect("a first page");
        for (field, ty) in organizations::FILTERS {
            let f = filter::parse(&text_of(field, ty), organizations::FILTERS)?;
            store.list_organizations(None, f, page()).await?;
        }
        for (field, ty) in principals::USER_FILTERS {
            let f = filter::parse(&text_of(field, ty), principals::USER_FILTERS)?;
            store.list_users("acme".into(), f, page()).await?;
        }
        for (field, ty) in principals::SERVICE_ACCOUNT_FILTERS {
            let f = filter::parse(&text_of(field, ty), principals::SERVICE_ACCOUNT_FILTERS)?;
            store
                .list_service_accounts("acme".into(), f, page())
                .await?;
        }
        for (field, ty) in api_keys::FILTERS {
            let f = filter::parse(&text_of(field, ty), api_keys::FILTERS)?;
            store.list_api_keys(user("acme", "u"), f, page()).await?;
        }
        Ok(())
    })
    .await;
}
