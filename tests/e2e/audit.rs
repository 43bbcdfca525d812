//! The audit log: `EventService.ListEvents` over gRPC and HTTP/JSON, its
//! filters and keyset pages, who may read it, and on PostgreSQL the index
//! each filter's query uses (EXPLAIN), and retention (the purge of old
//! relayed events, in batches).

use std::collections::BTreeSet;

use std::time::Duration;

use diesel::{ExpressionMethods, QueryDsl, QueryableByName, RunQueryDsl, sql_types::Text};
use tollgate_e2e::{
    Backend, Client, Code, TestServer, backends, curl, each_backend,
    fixtures::{
        create_key, create_org, create_sa, create_user, mask, org_name, quoted_time, sa_with_key,
    },
    outbox,
    rpc::RpcResult as _,
    v1::{Event, ListEventsRequest, RevokeApiKeyRequest, UpdateUserRequest, User},
};
use tollgate_server::{
    domain::now_micros,
    store::{
        Target,
        schema::{outbox as table, outbox_pending as pending},
    },
};

/// Every event of `parent` matching `filter`, page by page (`size` each):
/// the events, and how many pages it took.
async fn all(client: &Client, parent: &str, filter: &str, size: i32) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .events()
            .list_events(ListEventsRequest {
                parent: parent.into(),
                page_size: size,
                page_token: token.clone(),
                filter: filter.into(),
            })
            .await
            .expect_ok();
        pages += 1;
        assert!(size == 0 || page.events.len() <= usize::try_from(size).unwrap());
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return (events, pages);
        }
        token = page.next_page_token;
    }
}

fn types(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.r#type.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_events_filters_and_pages_in_commit_order() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "audited", "Audited").await;
        create_org(&admin, "other", "Other").await;
        let org = org_name("audited");
        create_user(&admin, "audited", "ada", &["viewer"]).await;
        let sa = create_sa(&admin, "audited", "robot", &["editor"]).await;
        let key = create_key(&admin, &sa.name, "ci").await;
        admin
            .api_keys()
            .revoke_api_key(RevokeApiKeyRequest {
                name: key.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_ok();
        create_user(&admin, "other", "bob", &["viewer"]).await;

        // Everything of the organization, oldest first, nothing of the other.
        let (events, _) = all(&admin, &org, "", 0).await;
        assert_eq!(
            types(&events),
            [
                "organization.created",
                "user.created",
                "serviceAccount.created",
                "apiKey.created",
                "apiKey.revoked"
            ]
        );
        assert!(events.windows(2).all(|w| w[0].id < w[1].id), "ids ascend");
        assert!(events.iter().all(|e| e.organization == org && e.id > 0));
        assert!(events.iter().all(|e| e.after.is_some()));

        // Pages of two give the same events, each once.
        let (paged, pages) = all(&admin, &org, "", 2).await;
        assert_eq!(paged, events);
        assert_eq!(pages, 3);

        // Filters.
        let (revoked, _) = all(&admin, &org, "type = \"apiKey.revoked\"", 0).await;
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].resource, key.name);
        let (users, _) = all(
            &admin,
            &org,
            "resource = \"organizations/audited/users/*\"",
            0,
        )
        .await;
        assert_eq!(types(&users), ["user.created"]);
        let (exact, _) = all(&admin, &org, &format!("resource = \"{}\"", sa.name), 0).await;
        assert_eq!(types(&exact), ["serviceAccount.created"]);
        let (not_users, _) = all(
            &admin,
            &org,
            "resource != \"organizations/audited/users/*\"",
            0,
        )
        .await;
        assert_eq!(not_users.len(), events.len() - 1);
        let actor = events[0].actor.clone();
        let (by_actor, _) = all(&admin, &org, &format!("actor = \"{actor}\""), 0).await;
        assert_eq!(by_actor, events);
        let (nobody, _) = all(&admin, &org, "actor = \"organizations/x/users/nobody\"", 0).await;
        assert!(nobody.is_empty());
        let since = quoted_time(events[3].time.as_ref());
        let (recent, _) = all(
            &admin,
            &org,
            &format!("time >= {since} AND type != \"organization.created\""),
            0,
        )
        .await;
        assert!(recent.iter().all(|e| e.id >= events[3].id), "{recent:?}");
        assert!(recent.iter().any(|e| e.r#type == "apiKey.revoked"));

        // Platform admins may read every organization at once.
        let (everything, _) = all(&admin, "organizations/-", "type = \"user.created\"", 0).await;
        let orgs: BTreeSet<_> = everything.iter().map(|e| e.organization.as_str()).collect();
        assert!(orgs.contains("organizations/audited") && orgs.contains("organizations/other"));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_other_organizations_are_refused() {
    let backend = backends().remove(0);
    let mut server = TestServer::start(&backend).await.unwrap();
    let admin = server.admin();
    create_org(&admin, "mine", "Mine").await;
    let viewer = server.client(&sa_with_key(&admin, "mine", "viewer", &["viewer"]).await);
    let list = |parent: &str, filter: &str, token: &str| ListEventsRequest {
        parent: parent.into(),
        filter: filter.into(),
        page_token: token.into(),
        ..Default::default()
    };
    // A viewer reads its own organization's log.
    let own = viewer
        .events()
        .list_events(list(&org_name("mine"), "", ""))
        .await;
    assert!(own.is_ok(), "{own:?}");
    for (req, field) in [
        (list(&org_name("mine"), "color = \"red\"", ""), "filter"),
        (
            list(&org_name("mine"), "time >= \"yesterday\"", ""),
            "filter",
        ),
        (list(&org_name("mine"), "", "not-a-token"), "page_token"),
        (list("users/x", "", ""), "parent"),
    ] {
        let s = viewer.events().list_events(req).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        let bad = tonic_types::StatusExt::get_details_bad_request(&s).expect("BadRequest");
        assert_eq!(bad.field_violations[0].field, field, "{s:?}");
    }
    // Another organization's log, and every organization's, are not its.
    for parent in [org_name("root"), "organizations/-".to_owned()] {
        let s = viewer
            .events()
            .list_events(list(&parent, "", ""))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{parent}: {s:?}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_events_over_http_json() {
    let Some(_) = curl::bin() else {
        return;
    };
    let backend = backends().remove(0);
    let mut server = TestServer::start(&backend).await.unwrap();
    let admin = server.admin();
    create_org(&admin, "webby", "Webby").await;
    create_user(&admin, "webby", "ada", &["viewer"]).await;
    let url = format!(
        "http://{}/v1/organizations/webby/events?filter=type%20%3D%20%22user.created%22",
        server.grpc_addr()
    );
    let header = format!("x-api-key: {}", server.admin_key());
    let r = curl::request(curl::Version::Http1, &url, &["-H", &header])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json().unwrap();
    let events = body["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["type"], "user.created");
    assert_eq!(events[0]["resource"], "organizations/webby/users/ada");
    assert_eq!(events[0]["user"]["name"], "organizations/webby/users/ada");
    server.stop().await.unwrap();
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// On PostgreSQL, with enough events that the planner cares, each filter
/// of ListEvents is answered from its own index (migration
/// `2026-11-28-000000_event_indexes`), never by scanning the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_events_filter_has_an_index_on_postgres() {
    let Some(backend) = backends()
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres { .. }))
    else {
        return;
    };
    // Retention off: the rows below are dated 2023 and relayed, which the
    // default 90 days would start deleting under the planner.
    let mut server = TestServer::start_configured(&backend, |c| c.event_retention = None)
        .await
        .unwrap();
    let url = server.database_url().to_owned();
    let plans = tokio::task::spawn_blocking(move || {
        let mut conn = Target::parse(&url).unwrap().establish().unwrap();
        // 40 organizations × 500 events, 10 types, 50 actors.
        diesel::sql_query(
            "INSERT INTO outbox (org_id, event_type, resource, payload, create_time, actor, request_id)
             SELECT 'org-' || (g % 40), 'type' || (g % 10) || '.changed',
                    'organizations/org-' || (g % 40) || '/users/u' || g, '',
                    1700000000000000 + g * 1000, 'organizations/org-' || (g % 40) || '/users/a' || (g % 50),
                    'bench'
             FROM generate_series(1, 20000) AS g",
        )
        .execute(&mut conn)
        .unwrap();
        diesel::sql_query("ANALYZE outbox").execute(&mut conn).unwrap();
        let base = "SELECT id, payload FROM outbox WHERE org_id = 'org-7' AND id > 100";
        [
            // In id order either way: the organization's index, or the
            // primary key filtered (the planner's pick with 40 even orgs).
            ("none", format!("{base} ORDER BY id LIMIT 51"), &["outbox_org ", "outbox_pkey"][..]),
            ("type", format!("{base} AND event_type = 'type7.changed' ORDER BY id LIMIT 51"), &["outbox_org_type"][..]),
            ("actor", format!("{base} AND actor = 'organizations/org-7/users/a7' ORDER BY id LIMIT 51"), &["outbox_org_actor"][..]),
            ("resource", format!("{base} AND resource = 'organizations/org-7/users/u7' ORDER BY id LIMIT 51"), &["outbox_org_resource"][..]),
            ("resource prefix", format!("{base} AND resource LIKE 'organizations/org-7/users/u12%' ESCAPE '\\' ORDER BY id LIMIT 51"), &["outbox_org_resource"][..]),
            ("time", format!("{base} AND create_time >= 1700000019000000 ORDER BY id LIMIT 51"), &["outbox_org_time", "outbox_create_time"][..]),
        ]
        .into_iter()
        .map(|(what, sql, indexes)| {
            let plan: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN {sql}"))
                .load(&mut conn)
                .unwrap();
            let plan = plan.into_iter().map(|l| l.line).collect::<Vec<_>>().join("\n");
            (what, indexes, plan)
        })
        .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (what, indexes, plan) in plans {
        assert!(!plan.contains("Seq Scan"), "{what}: a table scan:\n{plan}");
        assert!(
            indexes.iter().any(|i| plan.contains(i)),
            "{what}: expected one of {indexes:?}:\n{plan}"
        );
    }
    server.stop().await.unwrap();
}

const DAY_MICROS: i64 = 86_400_000_000;

/// Sets the create time of the outbox rows `ids` to `time` (µs), and
/// makes them relayed or (`relayed` false) not yet, as if they had been
/// written (and relayed) that long ago.
async fn age_rows(url: &str, ids: &[i64], time: i64, relayed: bool) {
    let url = url.to_owned();
    let ids = ids.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut conn = Target::parse(&url).unwrap().establish().unwrap();
        diesel::update(table::table.filter(table::id.eq_any(&ids)))
            .set(table::create_time.eq(time))
            .execute(&mut conn)
            .unwrap();
        diesel::delete(pending::table.filter(pending::id.eq_any(&ids)))
            .execute(&mut conn)
            .unwrap();
        if !relayed {
            for id in &ids {
                diesel::insert_into(pending::table)
                    .values(pending::id.eq(id))
                    .execute(&mut conn)
                    .unwrap();
            }
        }
    })
    .await
    .unwrap();
}

/// A server whose relay can never publish (its NATS refuses every
/// connection), so events stay unrelayed unless a test marks them
/// relayed; `retention` as `--event-retention`.
async fn server_without_relay(backend: &Backend, retention: Option<Duration>) -> TestServer {
    TestServer::start_configured(backend, move |c| {
        c.nats_url = Some("nats://127.0.0.1:9".into());
        c.event_retention = retention;
    })
    .await
    .unwrap_or_else(|e| panic!("[{backend}] cannot start the server: {e:#}"))
}

/// Writes `organizations/<org>` and eight users: nine events, returned
/// as their ids in order.
async fn nine_events(server: &TestServer, org: &str) -> Vec<i64> {
    let url = server.database_url().to_owned();
    let before = outbox::last_id(&url).await;
    let admin = server.admin();
    create_org(&admin, org, "Retained").await;
    for user in ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"] {
        create_user(&admin, org, user, &["viewer"]).await;
    }
    let ids: Vec<i64> = outbox::rows_after(&url, before)
        .await
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), 9, "one event per write");
    ids
}

fn event_ids(events: &[Event]) -> Vec<i64> {
    events
        .iter()
        .map(|e| i64::try_from(e.id).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_old_relayed_events_in_batches_and_never_unrelayed_ones() {
    for backend in backends() {
        eprintln!("=== scenario on {backend}");
        // No background purge: only the test's calls delete.
        let mut server = server_without_relay(&backend, None).await;
        let url = server.database_url().to_owned();
        let ids = nine_events(&server, "retained").await;
        let now = now_micros();
        let old = now - 2 * DAY_MICROS;
        // Old and relayed: purged. Old but unrelayed: kept however old.
        // Young and relayed: kept.
        age_rows(&url, &ids[..5], old, true).await;
        age_rows(&url, &ids[5..7], old, false).await;
        age_rows(&url, &ids[7..], now, true).await;
        let admin = server.admin();
        let (events, _) = all(&admin, &org_name("retained"), "", 0).await;
        assert_eq!(event_ids(&events), ids, "[{backend}] all listed before");

        let purged = server
            .store()
            .purge_events(now - DAY_MICROS, 2)
            .await
            .unwrap();
        assert_eq!(
            purged, 5,
            "[{backend}] the five old relayed rows, in batches of 2 (three batches)"
        );
        let left: Vec<i64> = outbox::rows_after(&url, ids[0] - 1)
            .await
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, ids[5..], "[{backend}] unrelayed and young rows stay");
        let (events, _) = all(&admin, &org_name("retained"), "", 0).await;
        assert_eq!(
            event_ids(&events),
            ids[5..],
            "[{backend}] ListEvents no longer shows the purged events"
        );
        let (events, _) = all(&admin, &org_name("retained"), "type = \"user.created\"", 1).await;
        assert_eq!(event_ids(&events), ids[5..], "[{backend}] filtered too");

        // Nothing left to purge; once relayed, the old rows go too.
        assert_eq!(
            server
                .store()
                .purge_events(now - DAY_MICROS, 2)
                .await
                .unwrap(),
            0,
            "[{backend}] a second purge finds nothing"
        );
        age_rows(&url, &ids[5..7], old, true).await;
        assert_eq!(
            server
                .store()
                .purge_events(now - DAY_MICROS, 1000)
                .await
                .unwrap(),
            2,
            "[{backend}] old rows go once relayed"
        );
        assert_eq!(
            outbox::rows_after(&url, ids[0] - 1)
                .await
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            ids[7..],
            "[{backend}]"
        );
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_purges_on_its_own_shortly_after_start() {
    for backend in backends() {
        eprintln!("=== scenario on {backend}");
        let mut server = server_without_relay(&backend, Some(Duration::from_secs(3600))).await;
        let url = server.database_url().to_owned();
        let ids = nine_events(&server, "retained").await;
        let old = now_micros() - 2 * 3_600_000_000;
        age_rows(&url, &ids[..4], old, true).await;
        age_rows(&url, &ids[4..6], old, false).await;
        // The first round runs soon after start; should this scenario have
        // been slower than that, the next one within a minute.
        let deadline = tokio::time::Instant::now()
            + tollgate_server::retention::FIRST
            + tollgate_server::retention::EVERY
            + Duration::from_secs(10);
        let left = loop {
            let left: Vec<i64> = outbox::rows_after(&url, ids[0] - 1)
                .await
                .iter()
                .map(|r| r.id)
                .collect();
            if left.len() < ids.len() || tokio::time::Instant::now() > deadline {
                break left;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(
            left,
            ids[4..],
            "[{backend}] the retention task deleted the old relayed events, and only those"
        );
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_name_the_fields_their_change_altered() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "changes", "Changes").await;
        let ada = create_user(&admin, "changes", "ada", &["viewer"]).await;
        admin
            .users()
            .update_user(UpdateUserRequest {
                user: Some(User {
                    name: ada.name.clone(),
                    display_name: "Ada L.".into(),
                    // Unchanged although in the mask: not listed.
                    roles: vec!["viewer".into()],
                    ..Default::default()
                }),
                update_mask: mask(&["display_name", "roles"]),
            })
            .await
            .expect_ok();
        let sa = create_sa(&admin, "changes", "robot", &["editor"]).await;
        let key = create_key(&admin, &sa.name, "ci").await;
        admin
            .api_keys()
            .revoke_api_key(RevokeApiKeyRequest {
                name: key.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_ok();
        let (events, _) = all(&admin, &org_name("changes"), "", 0).await;
        let changed: Vec<(&str, Vec<&str>)> = events
            .iter()
            .map(|e| {
                (
                    e.r#type.as_str(),
                    e.changed_fields.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            changed,
            [
                ("organization.created", vec![]),
                ("user.created", vec![]),
                ("user.updated", vec!["display_name"]),
                ("serviceAccount.created", vec![]),
                ("apiKey.created", vec![]),
                ("apiKey.revoked", vec!["state", "revoke_time"]),
            ]
        );
        Ok(())
    })
    .await;
}
