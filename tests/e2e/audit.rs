//! The audit log: `EventService.ListEvents` over gRPC and HTTP/JSON, its
//! filters and keyset pages, who may read it, and on PostgreSQL the index
//! each filter's query uses (EXPLAIN).

use std::collections::BTreeSet;

use diesel::{QueryableByName, RunQueryDsl, sql_types::Text};
use tollgate_e2e::{
    Backend, Client, Code, TestServer, backends, curl, each_backend,
    fixtures::{
        create_key, create_org, create_sa, create_user, org_name, quoted_time, sa_with_key,
    },
    rpc::RpcResult as _,
    v1::{Event, ListEventsRequest, RevokeApiKeyRequest},
};
use tollgate_server::store::Target;

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
    let mut server = TestServer::start(&backend).await.unwrap();
    let url = server.database_url().to_owned();
    let plans = tokio::task::spawn_blocking(move || {
        let mut conn = Target::parse(&url).unwrap().establish().unwrap();
        // 40 organizations × 500 events, 10 types, 50 actors.
        diesel::sql_query(
            "INSERT INTO outbox (org_id, event_type, resource, payload, create_time, actor, request_id, relay_time)
             SELECT 'org-' || (g % 40), 'type' || (g % 10) || '.changed',
                    'organizations/org-' || (g % 40) || '/users/u' || g, '',
                    1700000000000000 + g * 1000, 'organizations/org-' || (g % 40) || '/users/a' || (g % 50),
                    'bench', 1700000000000000 + g * 1000
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
