//! `EventService.WatchEvents`: a watch replays from its cursor, follows
//! live without a gap, and resumes after a disconnect with nothing missed
//! or repeated, compared with ListEvents; the same over newline-delimited
//! JSON and over a WebSocket with independent Python clients
//! (`tests/peers/watch_read.py`), and over Connect's streaming envelopes
//! (curl); a watcher that reads too slowly is ended
//! with its cursor instead of growing memory; a stopping server ends its
//! watchers with theirs; and a watch is refused clearly.

use std::{process::Command, time::Duration};

use tollgate_client::{
    Settings,
    tonic::{Status, Streaming, transport::Endpoint},
    tonic_types::StatusExt as _,
};
use tollgate_e2e::{
    Backend, Client, Code, TestServer, concurrently, each_backend,
    fixtures::{create_key, create_org, create_sa, create_user, mask, org_name, sa_with_key},
    peers,
    rpc::RpcResult as _,
    v1::{
        Event, ListEventsRequest, Organization, RevokeApiKeyRequest, ServiceAccount,
        UpdateOrganizationRequest, UpdateServiceAccountRequest, WatchEventsRequest,
        WatchEventsResponse,
    },
};

/// How long a test waits for an event that must come.
const ARRIVES: Duration = Duration::from_secs(10);

fn watch_request(parent: &str, filter: &str, cursor: &str) -> WatchEventsRequest {
    WatchEventsRequest {
        parent: parent.into(),
        filter: filter.into(),
        cursor: cursor.into(),
    }
}

async fn watch(
    client: &Client,
    parent: &str,
    filter: &str,
    cursor: &str,
) -> Streaming<WatchEventsResponse> {
    client
        .events()
        .watch_events(watch_request(parent, filter, cursor))
        .await
        .expect_ok()
}

/// The next `n` events of `stream`, each within [`ARRIVES`].
async fn take(stream: &mut Streaming<WatchEventsResponse>, n: usize) -> Vec<Event> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let next = tokio::time::timeout(ARRIVES, stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!("event {} of {n} did not arrive; got {got:?}", got.len() + 1)
            });
        match next {
            Ok(Some(r)) => got.push(r.event.expect("a response carries its event")),
            Ok(None) => panic!("the stream ended after {} of {n} events", got.len()),
            Err(s) => panic!("the stream failed after {} of {n} events: {s:?}", got.len()),
        }
    }
    got
}

/// Asserts that `stream` has nothing more for a moment (it is live, not
/// ended).
async fn assert_quiet(stream: &mut Streaming<WatchEventsResponse>) {
    if let Ok(next) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("expected no event, got {next:?}");
    }
}

/// Every event of `parent` matching `filter`, from ListEvents.
async fn listed(client: &Client, parent: &str, filter: &str) -> Vec<Event> {
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .events()
            .list_events(ListEventsRequest {
                parent: parent.into(),
                page_size: 1000,
                page_token: token,
                filter: filter.into(),
            })
            .await
            .expect_ok();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        token = page.next_page_token;
    }
}

fn ids(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

async fn rename(client: &Client, org: &str, display: &str) {
    client
        .organizations()
        .update_organization(UpdateOrganizationRequest {
            organization: Some(Organization {
                name: org_name(org),
                display_name: display.into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
        })
        .await
        .expect_ok();
}

/// The `ErrorInfo` reason and `cursor` of a watch's end.
fn end_of(status: &Status) -> (String, u64) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    let cursor = info
        .metadata
        .get("cursor")
        .unwrap_or_else(|| panic!("no cursor in {status:?}"))
        .parse()
        .expect("the cursor is an event id");
    (info.reason, cursor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_replays_follows_and_resumes_without_gaps() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "watched", "Watched").await;
        create_org(&admin, "elsewhere", "Elsewhere").await;
        let org = org_name("watched");
        for id in ["u1", "u2", "u3"] {
            create_user(&admin, "watched", id, &["viewer"]).await;
        }

        // From the beginning: the table's events, then live ones.
        let mut stream = watch(&admin, &org, "", "0").await;
        let replayed = take(&mut stream, 4).await;
        assert_eq!(replayed, listed(&admin, &org, "").await);
        assert_eq!(replayed[0].r#type, "organization.created");
        create_user(&admin, "elsewhere", "e1", &["viewer"]).await;
        create_user(&admin, "watched", "u4", &["viewer"]).await;
        let live = take(&mut stream, 1).await;
        assert_eq!(live[0].r#type, "user.created");
        assert_eq!(live[0].resource, "organizations/watched/users/u4");
        assert_quiet(&mut stream).await;

        // Gone mid-stream; changes meanwhile; back with the cursor.
        let cursor = live[0].id;
        drop(stream);
        rename(&admin, "watched", "Renamed once").await;
        create_user(&admin, "watched", "u5", &["viewer"]).await;
        rename(&admin, "watched", "Renamed twice").await;
        let mut stream = watch(&admin, &org, "", &cursor.to_string()).await;
        let missed = take(&mut stream, 3).await;
        assert_eq!(
            missed.iter().map(|e| e.r#type.as_str()).collect::<Vec<_>>(),
            [
                "organization.updated",
                "user.created",
                "organization.updated"
            ]
        );
        assert_eq!(missed[0].changed_fields, ["display_name"]);
        let mut seen = replayed;
        seen.extend(live);
        seen.extend(missed);
        // Identical to the audit log: nothing missed, nothing twice.
        assert_eq!(seen, listed(&admin, &org, "").await);
        // And live again after the replay.
        create_user(&admin, "watched", "u6", &["viewer"]).await;
        assert_eq!(
            take(&mut stream, 1).await[0].resource,
            "organizations/watched/users/u6"
        );
        assert_quiet(&mut stream).await;
        drop(stream);

        // A filter applies to the replay and to live events alike.
        let filter = "type = \"user.created\" AND resource != \"organizations/watched/users/u1\"";
        let mut stream = watch(&admin, &org, filter, "0").await;
        let expected = listed(&admin, &org, filter).await;
        assert_eq!(expected.len(), 5, "{expected:?}");
        assert_eq!(take(&mut stream, expected.len()).await, expected);
        rename(&admin, "watched", "Not a user").await;
        create_user(&admin, "watched", "u7", &["viewer"]).await;
        let next = take(&mut stream, 1).await;
        assert_eq!(next[0].resource, "organizations/watched/users/u7");
        drop(stream);

        // Without a cursor: only what is committed from now on.
        let mut stream = watch(&admin, &org, "", "").await;
        assert_quiet(&mut stream).await;
        create_user(&admin, "watched", "u8", &["viewer"]).await;
        let now = take(&mut stream, 1).await;
        assert_eq!(now[0].resource, "organizations/watched/users/u8");
        assert_eq!(Some(&now[0]), listed(&admin, &org, "").await.last());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_is_refused_clearly() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "mine", "Mine").await;
        create_org(&admin, "theirs", "Theirs").await;
        let viewer = server.client(&sa_with_key(&admin, "mine", "watcher", &["viewer"]).await);
        let mine = org_name("mine");

        // A viewer may watch its own organization, not another.
        let mut stream = watch(&viewer, &mine, "", "0").await;
        assert_eq!(take(&mut stream, 1).await[0].r#type, "organization.created");
        viewer
            .events()
            .watch_events(watch_request(&org_name("theirs"), "", ""))
            .await
            .expect_code(Code::PermissionDenied);
        server
            .anonymous()
            .events()
            .watch_events(watch_request(&mine, "", ""))
            .await
            .expect_code(Code::Unauthenticated);
        // Ids are ordered within an organization only.
        admin
            .events()
            .watch_events(watch_request("organizations/-", "", ""))
            .await
            .expect_invalid("parent");
        admin
            .events()
            .watch_events(watch_request("users/x", "", ""))
            .await
            .expect_invalid("parent");
        for cursor in ["-1", "abc", "1.5"] {
            admin
                .events()
                .watch_events(watch_request(&mine, "", cursor))
                .await
                .expect_invalid("cursor");
        }
        admin
            .events()
            .watch_events(watch_request(&mine, "colour = \"red\"", ""))
            .await
            .expect_invalid("filter");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_when_its_caller_may_no_longer_read() {
    for backend in tollgate_e2e::backends() {
        let mut server = TestServer::start_configured(&backend, |c| {
            c.watch_recheck = Duration::from_millis(200);
        })
        .await
        .unwrap();
        let admin = server.admin();
        create_org(&admin, "guarded", "Guarded").await;
        let org = org_name("guarded");

        // A revoked key.
        let sa = create_sa(&admin, "guarded", "revoked", &["viewer"]).await;
        let key = create_key(&admin, &sa.name, "watch").await;
        let mut revoked = watch(&server.client(&key.secret), &org, "", "").await;
        // A principal that loses its role.
        let sa = create_sa(&admin, "guarded", "demoted", &["viewer"]).await;
        let demoted_key = create_key(&admin, &sa.name, "watch").await;
        let mut demoted = watch(&server.client(&demoted_key.secret), &org, "", "").await;
        // One whose access stays.
        let kept_key = sa_with_key(&admin, "guarded", "kept", &["viewer"]).await;
        let mut kept = watch(&server.client(&kept_key), &org, "", "").await;

        admin
            .api_keys()
            .revoke_api_key(RevokeApiKeyRequest {
                name: key.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_ok();
        admin
            .service_accounts()
            .update_service_account(UpdateServiceAccountRequest {
                service_account: Some(ServiceAccount {
                    name: sa.name.clone(),
                    roles: Vec::new(),
                    ..Default::default()
                }),
                update_mask: mask(&["roles"]),
            })
            .await
            .expect_ok();
        for (stream, code) in [
            (&mut revoked, Code::Unauthenticated),
            (&mut demoted, Code::PermissionDenied),
        ] {
            let status = loop {
                match tokio::time::timeout(ARRIVES, stream.message()).await {
                    Ok(Ok(Some(_))) => continue,
                    Ok(Ok(None)) => panic!("ended without a status"),
                    Ok(Err(status)) => break status,
                    Err(_) => panic!("the watch went on after its caller lost access"),
                }
            };
            assert_eq!(status.code(), code, "{status:?}");
        }
        // The other watcher goes on, and saw both changes.
        let seen = take(&mut kept, 2).await;
        assert_eq!(
            seen.iter().map(|e| e.r#type.as_str()).collect::<Vec<_>>(),
            ["apiKey.revoked", "serviceAccount.updated"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_quiet(&mut kept).await;
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_ended_with_its_cursor_and_resumes() {
    for backend in tollgate_e2e::backends() {
        let mut server = TestServer::start_configured(&backend, |c| c.watch_buffer = 8)
            .await
            .unwrap();
        let admin = server.admin();
        create_org(&admin, "busy", "Busy").await;
        let org = org_name("busy");

        // A watcher on its own connection with small HTTP/2 windows, that
        // stops reading: the server stops pulling its stream, and its
        // place in the hub's eight-event buffer is overrun.
        let channel = Endpoint::from_shared(server.grpc_url())
            .unwrap()
            .initial_stream_window_size(Some(8 * 1024))
            .initial_connection_window_size(Some(8 * 1024))
            .connect()
            .await
            .unwrap();
        let slow =
            Client::from_channel(channel, Settings::new().api_key(server.admin_key())).unwrap();
        let mut stream = watch(&slow, &org, "", "0").await;
        let first = take(&mut stream, 1).await;
        concurrently(4, |w| {
            let admin = admin.clone();
            async move {
                for i in 0..150 {
                    rename(
                        &admin,
                        "busy",
                        &format!("Writer {w} rename {i} {}", "x".repeat(150)),
                    )
                    .await;
                }
            }
        })
        .await;

        // What was in flight arrives, then the end, naming the cursor.
        let mut seen = first;
        let status = loop {
            match tokio::time::timeout(ARRIVES, stream.message()).await {
                Ok(Ok(Some(r))) => seen.push(r.event.unwrap()),
                Ok(Ok(None)) => panic!("the stream ended without a status"),
                Ok(Err(status)) => break status,
                Err(_) => panic!("the slow watcher was not ended; it read {}", seen.len()),
            }
        };
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
        let (reason, cursor) = end_of(&status);
        assert_eq!(reason, "WATCH_FELL_BEHIND");
        assert_eq!(
            cursor,
            seen.last().unwrap().id,
            "the cursor is the last event sent"
        );
        assert!(seen.len() < 601, "it was ended before it read everything");

        // Resumed from the cursor, it gets the rest: all of them, once.
        let all = listed(&admin, &org, "").await;
        assert_eq!(all.len(), 601);
        let mut stream = watch(&admin, &org, "", &cursor.to_string()).await;
        seen.extend(take(&mut stream, all.len() - seen.len()).await);
        assert_eq!(ids(&seen), ids(&all));
        assert_quiet(&mut stream).await;
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_ends_its_watchers_with_their_cursors() {
    let mut server = TestServer::start(&Backend::Sqlite).await.unwrap();
    let admin = server.admin();
    create_org(&admin, "leaving", "Leaving").await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = watch(&admin, &org_name("leaving"), "", "0").await;
        take(&mut stream, 1).await;
        streams.push(stream);
    }
    let started = std::time::Instant::now();
    server.stop().await.unwrap();
    // Not held until the drain's grace ran out.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for mut stream in streams {
        let status = stream
            .message()
            .await
            .expect_err("the watch ends with a status");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let (reason, cursor) = end_of(&status);
        assert_eq!(reason, "SHUTTING_DOWN");
        assert!(cursor > 0);
    }
}

/// Runs `tests/peers/watch_read.py`: the first `count` messages of a watch
/// over `kind` (`ndjson` or `ws`), as JSON values, after checking the
/// response's status line.
async fn python_watch(
    python: &std::path::Path,
    kind: &str,
    url: &str,
    key: &str,
    count: usize,
) -> Vec<serde_json::Value> {
    let script = peers::workspace_root().join("tests/peers/watch_read.py");
    let mut cmd = Command::new(python);
    cmd.arg(script).args([kind, url, key, &count.to_string()]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let status = lines.next().unwrap_or_default();
    match kind {
        "ndjson" => assert_eq!(status, "STATUS 200 application/x-ndjson", "{stdout}"),
        _ => assert_eq!(status, "STATUS 101 websocket", "{stdout}"),
    }
    lines
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_and_websocket_watchers_resume_without_gaps() {
    let Some(python) = peers::venv_tool("WatchEvents over NDJSON and WebSocket", "python3") else {
        return;
    };
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let key = server.admin_key().to_owned();
        for (kind, scheme) in [("ndjson", "http"), ("ws", "ws")] {
            let id = format!("over-{kind}");
            create_org(&admin, &id, "Followed").await;
            create_user(&admin, &id, "a", &["viewer"]).await;
            create_user(&admin, &id, "b", &["viewer"]).await;
            let org = org_name(&id);
            let base = format!("{scheme}://{}/v1/{org}/events:watch", server.grpc_addr());

            // Three events, then the client goes away.
            let first = python_watch(&python, kind, &format!("{base}?cursor=0"), &key, 3).await;
            let event_id = |line: &serde_json::Value| -> u64 {
                line["result"]["event"]["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("uint64 as a JSON string: {line}"))
                    .parse()
                    .unwrap()
            };
            let mut seen: Vec<u64> = first.iter().map(event_id).collect();
            assert_eq!(first[0]["result"]["event"]["type"], "organization.created");

            // Written while it was away, read after it came back.
            rename(&admin, &id, "Renamed").await;
            create_user(&admin, &id, "c", &["viewer"]).await;
            let cursor = seen.last().copied().unwrap();
            let rest =
                python_watch(&python, kind, &format!("{base}?cursor={cursor}"), &key, 2).await;
            assert_eq!(
                rest[0]["result"]["event"]["changedFields"],
                serde_json::json!(["display_name"]),
                "{rest:?}"
            );
            seen.extend(rest.iter().map(event_id));
            assert_eq!(seen, ids(&listed(&admin, &org, "").await), "{kind}");

            // A filter from the query string.
            let filtered = python_watch(
                &python,
                kind,
                &format!("{base}?cursor=0&filter=type%20%3D%20%22user.created%22"),
                &key,
                3,
            )
            .await;
            assert!(
                filtered
                    .iter()
                    .all(|l| l["result"]["event"]["type"] == "user.created"),
                "{filtered:?}"
            );
        }
        Ok(())
    })
    .await;
}

/// The messages a Connect server stream of WatchEvents (JSON envelopes
/// over HTTP/2, as Connect clients send them) carries within `seconds`;
/// curl, cut off by its `--max-time`, is the client.
async fn connect_watch(
    server: &TestServer,
    parent: &str,
    cursor: &str,
    seconds: u32,
) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let request = serde_json::json!({"parent": parent, "cursor": cursor}).to_string();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(request.len()).unwrap().to_be_bytes());
    body.extend_from_slice(request.as_bytes());
    let (body_file, out) = (dir.path().join("body"), dir.path().join("out"));
    std::fs::write(&body_file, body).unwrap();
    let mut cmd = Command::new(tollgate_e2e::curl::bin().expect("curl"));
    cmd.args([
        "-sS",
        "--http2-prior-knowledge",
        "--max-time",
        &seconds.to_string(),
    ])
    .args(["-X", "POST", "-H", "content-type: application/connect+json"])
    .args(["-H", "connect-protocol-version: 1"])
    .args([
        "-H",
        &format!("authorization: Bearer {}", server.admin_key()),
    ])
    .arg("--data-binary")
    .arg(format!("@{}", body_file.display()))
    .arg("-o")
    .arg(&out)
    .arg(format!(
        "http://{}/tollgate.v1.EventService/WatchEvents",
        server.grpc_addr()
    ));
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await
        .unwrap()
        .unwrap();
    // 28: cut off at --max-time, as meant (a watch does not end).
    assert!(status.code() == Some(28), "curl: {status:?}");
    let bytes = std::fs::read(&out).unwrap();
    let mut messages = Vec::new();
    let mut rest = bytes.as_slice();
    while rest.len() >= 5 {
        let (flags, len) = (
            rest[0],
            u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize,
        );
        assert_eq!(flags, 0, "only messages, no end of stream");
        messages.push(serde_json::from_slice(&rest[5..5 + len]).unwrap());
        rest = &rest[5 + len..];
    }
    assert!(rest.is_empty(), "a whole number of envelopes");
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_watcher_resumes_without_gaps() {
    if tollgate_e2e::curl::bin().is_none() {
        return;
    }
    let mut server = TestServer::start(&Backend::Sqlite).await.unwrap();
    let admin = server.admin();
    create_org(&admin, "connected", "Connected").await;
    create_user(&admin, "connected", "a", &["viewer"]).await;
    let org = org_name("connected");
    let id = |m: &serde_json::Value| -> u64 {
        m["event"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{m}"))
            .parse()
            .unwrap()
    };
    let first = connect_watch(&server, &org, "0", 2).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0]["event"]["type"], "organization.created");
    rename(&admin, "connected", "Renamed").await;
    let cursor = id(&first[1]).to_string();
    let rest = connect_watch(&server, &org, &cursor, 2).await;
    let seen: Vec<u64> = first.iter().chain(&rest).map(id).collect();
    assert_eq!(seen, ids(&listed(&admin, &org, "").await));
    server.stop().await.unwrap();
}
