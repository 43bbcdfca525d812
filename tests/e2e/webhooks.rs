//! Webhooks end to end, against a real HTTP receiver on loopback
//! (`support/receiver.rs`): deliveries arrive signed, in event order, as
//! the filter says; failures are retried (5xx, 429 with `Retry-After`, a
//! dropped connection) while later deliveries wait; other 4xx are not
//! retried; the last attempt makes a delivery dead and RetryDelivery sends
//! it again; a rotation signs with both secrets during its overlap; URLs
//! and targets are checked (SSRF). And the signatures checked by an
//! independent implementation: the reference `standardwebhooks` package
//! from PyPI (`tests/peers/webhook_verify.py`) verifies what Tollgate
//! signs, with either secret during a rotation's overlap, and refuses a
//! tampered body or a wrong secret.

use std::{
    io::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use tollgate_client::v1::{
    CreateWebhookRequest, DeleteWebhookRequest, Delivery, ListDeliveriesRequest, ListEventsRequest,
    RetryDeliveryRequest, RotateWebhookSecretRequest, UpdateWebhookRequest, Webhook,
    delivery::Status as DeliveryStatus, webhook::State,
};
use tollgate_e2e::{
    Backend, TestServer, backends,
    fixtures::{create_org, create_user, mask, org_name},
    peers,
    receiver::{Answer, Receiver},
    rpc::RpcResult as _,
};
use tollgate_server::webhooks::signature::{Secret, headers, signature};

/// What the reference implementation says of `body` sent with `headers`,
/// verified with `secret`.
fn verify(
    python: &std::path::Path,
    secret: &str,
    headers: &[(&str, String)],
    body: &str,
) -> String {
    let case = serde_json::json!({
        "secret": secret,
        "headers": headers.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
        "body": body,
    });
    let mut child = Command::new(python)
        .arg(peers::workspace_root().join("tests/peers/webhook_verify.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(case.to_string().as_bytes())
        .expect("the case is written");
    let out = child.wait_with_output().expect("python finishes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_reference_implementation_verifies_our_signatures() {
    let Some(python) = peers::venv_tool("webhook signature interop", "python3") else {
        return;
    };
    let has_package = Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_package {
        peers::skip(
            "webhook signature interop",
            "the virtualenv lacks standardwebhooks (.venv/bin/pip install standardwebhooks)",
        );
        return;
    }
    let (old, new) = (Secret::generate(), Secret::generate());
    let keys = [Secret::parse(&old).unwrap(), Secret::parse(&new).unwrap()];
    let body = r#"{"type":"apiKey.revoked","data":{"id":"42"}}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sent = headers(&keys, "msg_42", now, body.as_bytes());
    // During a rotation, a receiver holding either secret accepts it.
    assert_eq!(verify(&python, &old, &sent, body), "ok");
    assert_eq!(verify(&python, &new, &sent, body), "ok");
    // After it, the new secret alone.
    let after = headers(&keys[1..], "msg_43", now, body.as_bytes());
    assert_eq!(verify(&python, &new, &after, body), "ok");
    assert!(verify(&python, &old, &after, body).starts_with("refused"));
    // A tampered body, or a stale timestamp, is refused.
    assert!(verify(&python, &new, &sent, &body.replace("42", "43")).starts_with("refused"));
    let stale = headers(&keys, "msg_44", now - 3600, body.as_bytes());
    assert!(verify(&python, &new, &stale, body).starts_with("refused"));
}

/// Runs `scenario` on a server of each backend configured for loopback
/// receivers and `attempts` attempts per delivery.
async fn each_backend_with_receivers<F>(attempts: u32, mut scenario: F)
where
    F: AsyncFnMut(&mut TestServer, Backend) -> anyhow::Result<()>,
{
    for backend in backends() {
        eprintln!("=== scenario on {backend}");
        let mut server = TestServer::start_configured(&backend, move |c| {
            c.webhook_allow_loopback = true;
            c.webhook_max_attempts = attempts;
            c.webhook_timeout = Duration::from_secs(2);
        })
        .await
        .unwrap_or_else(|e| panic!("[{backend}] cannot start the server: {e:#}"));
        match tokio::time::timeout(
            Duration::from_secs(120),
            scenario(&mut server, backend.clone()),
        )
        .await
        {
            Err(_) => panic!("[{backend}] scenario timed out"),
            Ok(Err(e)) => panic!("[{backend}] {e:#}"),
            Ok(Ok(())) => {}
        }
        server.stop().await.unwrap();
    }
}

/// Creates webhook `id` of `org` posting to `url` for `types`.
async fn create_hook(
    server: &TestServer,
    org: &str,
    id: &str,
    url: &str,
    types: &[&str],
) -> Webhook {
    server
        .admin()
        .webhooks()
        .create_webhook(CreateWebhookRequest {
            parent: org_name(org),
            webhook_id: id.into(),
            webhook: Some(Webhook {
                display_name: format!("Hook {id}"),
                url: url.into(),
                event_types: types.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            }),
        })
        .await
        .expect_ok()
}

async fn deliveries(server: &TestServer, hook: &str) -> Vec<Delivery> {
    server
        .admin()
        .webhooks()
        .list_deliveries(ListDeliveriesRequest {
            parent: hook.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect_ok()
        .deliveries
}

/// Waits until every delivery of `hook` is finished (not PENDING) and
/// there are `n`; returns them, newest first.
async fn settled(server: &TestServer, hook: &str, n: usize, within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    loop {
        let got = deliveries(server, hook).await;
        if got.len() == n
            && got
                .iter()
                .all(|d| d.status != DeliveryStatus::Pending as i32)
        {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries of {hook} did not settle: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the Standard Webhooks headers of `r` against `secret`: the id is
/// the event's, the timestamp recent, and one of the signatures verifies.
fn assert_signed(r: &tollgate_e2e::receiver::Received, secret: &str) {
    let id = r.header("webhook-id");
    assert_eq!(id, r.event_id().to_string(), "webhook-id is the event id");
    let ts: i64 = r.header("webhook-timestamp").parse().expect("a timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts).abs() < 60, "timestamp {ts} vs now {now}");
    let expected = signature(&[Secret::parse(secret).unwrap()], id, ts, r.body.as_bytes());
    assert!(
        r.header("webhook-signature")
            .split(' ')
            .any(|s| s == expected),
        "no signature by this secret in {:?}",
        r.header("webhook-signature")
    );
    assert_eq!(r.header("content-type"), "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_arrive_signed_in_event_order_as_the_filter_says() {
    each_backend_with_receivers(3, async |server, _| {
        let receiver = Receiver::start().await;
        create_org(&server.admin(), "hooked", "Hooked").await;
        let hook = create_hook(server, "hooked", "crm", &receiver.url(), &["user.*"]).await;
        assert!(
            hook.secret.starts_with("whsec_"),
            "the secret is shown once"
        );
        assert_eq!(hook.state, State::Active as i32);
        let got = server
            .admin()
            .webhooks()
            .get_webhook(tollgate_client::v1::GetWebhookRequest {
                name: hook.name.clone(),
            })
            .await
            .expect_ok();
        assert!(got.secret.is_empty(), "and never again");
        for i in 0..5 {
            create_user(&server.admin(), "hooked", &format!("u{i}"), &["viewer"]).await;
        }
        // Not matched by the filter: never delivered.
        tollgate_e2e::fixtures::create_sa(&server.admin(), "hooked", "robot", &["viewer"]).await;
        let received = receiver.wait_for(5, Duration::from_secs(20)).await;
        let ids: Vec<u64> = received.iter().map(|r| r.event_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "delivered in event order");
        for r in &received {
            assert_signed(r, &hook.secret);
            let body = r.json();
            assert_eq!(body["type"], "user.created");
            assert!(
                body["data"]["resource"]
                    .as_str()
                    .unwrap()
                    .starts_with("organizations/hooked/users/u")
            );
            assert_eq!(body["timestamp"], body["data"]["time"]);
        }
        let list = settled(server, &hook.name, 5, Duration::from_secs(10)).await;
        for d in &list {
            assert_eq!(d.status, DeliveryStatus::Succeeded as i32);
            assert_eq!((d.attempts, d.last_response_code), (1, 200));
            assert!(d.last_latency.is_some() && d.last_attempt_time.is_some());
            assert_eq!(d.event_type, "user.created");
        }
        // Newest first; names carry the event id.
        assert!(list.windows(2).all(|w| w[0].event_id > w[1].event_id));
        assert_eq!(
            list[0].name,
            format!("{}/deliveries/{}", hook.name, list[0].event_id)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            receiver.received().len(),
            5,
            "the service account was not delivered"
        );

        // The webhook's own events: no secret in them.
        let events = server
            .admin()
            .events()
            .list_events(ListEventsRequest {
                parent: org_name("hooked"),
                filter: "type = \"webhook.created\"".into(),
                ..Default::default()
            })
            .await
            .expect_ok()
            .events;
        assert_eq!(events.len(), 1);
        match &events[0].after {
            Some(tollgate_client::v1::event::After::Webhook(w)) => {
                assert!(w.secret.is_empty());
                assert_eq!(w.url, receiver.url());
            }
            other => panic!("webhook.created carries {other:?}"),
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_honouring_retry_after_while_later_deliveries_wait() {
    each_backend_with_receivers(5, async |server, _| {
        let receiver = Receiver::start().await;
        receiver.script([
            Answer::Status(503, Some("1".into())),
            Answer::Drop,
            Answer::Status(429, Some("1".into())),
        ]);
        create_org(&server.admin(), "flaky", "Flaky").await;
        let hook = create_hook(server, "flaky", "crm", &receiver.url(), &["user.created"]).await;
        create_user(&server.admin(), "flaky", "first", &["viewer"]).await;
        create_user(&server.admin(), "flaky", "second", &["viewer"]).await;
        let got = receiver.wait_for(5, Duration::from_secs(30)).await;
        let answers: Vec<&str> = got.iter().map(|r| r.answer.as_str()).collect();
        assert_eq!(answers, ["503", "dropped", "429", "200", "200"]);
        let first = got[0].event_id();
        assert!(
            got[..4].iter().all(|r| r.event_id() == first),
            "the second delivery waited for the first: {:?}",
            got.iter().map(|r| r.event_id()).collect::<Vec<_>>()
        );
        assert!(got[4].event_id() > first);
        // Every attempt is the same message.
        assert!(got[..4].iter().all(
            |r| r.header("webhook-id") == got[0].header("webhook-id") && r.body == got[0].body
        ));
        // Retry-After: 1 was honoured (not sooner), twice.
        assert!(
            got[1].at - got[0].at >= Duration::from_millis(900),
            "{:?}",
            got[1].at - got[0].at
        );
        assert!(
            got[3].at - got[2].at >= Duration::from_millis(900),
            "{:?}",
            got[3].at - got[2].at
        );
        let list = settled(server, &hook.name, 2, Duration::from_secs(10)).await;
        let first_delivery = list.iter().find(|d| d.event_id == first).unwrap();
        assert_eq!(
            (
                first_delivery.status,
                first_delivery.attempts,
                first_delivery.last_response_code
            ),
            (DeliveryStatus::Succeeded as i32, 4, 200)
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_not_retried_the_last_attempt_is_dead_and_retry_delivery_sends_again() {
    each_backend_with_receivers(2, async |server, _| {
        let receiver = Receiver::start().await;
        receiver.script([
            Answer::Status(410, None),
            Answer::Status(500, None),
            Answer::Status(500, None),
        ]);
        create_org(&server.admin(), "gone", "Gone").await;
        let hook = create_hook(server, "gone", "crm", &receiver.url(), &["user.created"]).await;
        create_user(&server.admin(), "gone", "a", &["viewer"]).await;
        create_user(&server.admin(), "gone", "b", &["viewer"]).await;
        let list = settled(server, &hook.name, 2, Duration::from_secs(30)).await;
        let (newer, older) = (&list[0], &list[1]);
        assert_eq!(
            (older.status, older.attempts, older.last_response_code),
            (DeliveryStatus::Dead as i32, 1, 410),
            "410 is not retried"
        );
        assert_eq!(
            (newer.status, newer.attempts, newer.last_response_code),
            (DeliveryStatus::Dead as i32, 2, 500),
            "dead after its last attempt"
        );
        assert!(newer.last_error.contains("500"), "{}", newer.last_error);
        assert_eq!(receiver.received().len(), 3);

        // Retried by hand, it is sent again (the receiver now says 200).
        let retried = server
            .admin()
            .webhooks()
            .retry_delivery(RetryDeliveryRequest {
                name: older.name.clone(),
            })
            .await
            .expect_ok();
        assert_eq!(
            (retried.status, retried.attempts),
            (DeliveryStatus::Pending as i32, 0)
        );
        let got = receiver.wait_for(4, Duration::from_secs(10)).await;
        assert_eq!(got[3].event_id(), older.event_id);
        let list = settled(server, &hook.name, 2, Duration::from_secs(10)).await;
        assert_eq!(list[1].status, DeliveryStatus::Succeeded as i32);
        assert_eq!((list[1].attempts, list[1].last_response_code), (1, 200));
        // A delivery still pending is not retried; an unknown one is not found.
        let missing = format!("{}/deliveries/999999", hook.name);
        server
            .admin()
            .webhooks()
            .retry_delivery(RetryDeliveryRequest { name: missing })
            .await
            .expect_code(tonic::Code::NotFound);
        server
            .admin()
            .webhooks()
            .retry_delivery(RetryDeliveryRequest {
                name: format!("{}/deliveries/x", hook.name),
            })
            .await
            .expect_invalid("name");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_signs_with_both_secrets_during_its_overlap() {
    each_backend_with_receivers(3, async |server, _| {
        let receiver = Receiver::start().await;
        create_org(&server.admin(), "rot", "Rot").await;
        let hook = create_hook(server, "rot", "crm", &receiver.url(), &["user.created"]).await;
        let rotated = server
            .admin()
            .webhooks()
            .rotate_webhook_secret(RotateWebhookSecretRequest {
                name: hook.name.clone(),
                grace_period: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                etag: hook.etag.clone(),
            })
            .await
            .expect_ok();
        assert!(rotated.secret.starts_with("whsec_") && rotated.secret != hook.secret);
        assert!(rotated.previous_secret_expire_time.is_some());
        create_user(&server.admin(), "rot", "a", &["viewer"]).await;
        let got = receiver.wait_for(1, Duration::from_secs(20)).await;
        assert_eq!(got[0].header("webhook-signature").split(' ').count(), 2);
        assert_signed(&got[0], &hook.secret);
        assert_signed(&got[0], &rotated.secret);
        // Cut off at once: only the newest secret signs.
        let again = server
            .admin()
            .webhooks()
            .rotate_webhook_secret(RotateWebhookSecretRequest {
                name: hook.name.clone(),
                grace_period: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 0,
                }),
                etag: String::new(),
            })
            .await
            .expect_ok();
        assert!(again.previous_secret_expire_time.is_none());
        create_user(&server.admin(), "rot", "b", &["viewer"]).await;
        let got = receiver.wait_for(2, Duration::from_secs(20)).await;
        assert_eq!(got[1].header("webhook-signature").split(' ').count(), 1);
        assert_signed(&got[1], &again.secret);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_webhook_holds_its_deliveries_until_enabled_and_a_deleted_one_gets_none() {
    each_backend_with_receivers(3, async |server, _| {
        let receiver = Receiver::start().await;
        create_org(&server.admin(), "pause", "Pause").await;
        let hook = create_hook(
            server,
            "pause",
            "crm",
            &receiver.url(),
            &["user.created", "webhook.updated"],
        )
        .await;
        create_user(&server.admin(), "pause", "a", &["viewer"]).await;
        receiver.wait_for(1, Duration::from_secs(20)).await;
        let disabled = server
            .admin()
            .webhooks()
            .update_webhook(UpdateWebhookRequest {
                webhook: Some(Webhook {
                    name: hook.name.clone(),
                    state: State::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["state"]),
            })
            .await
            .expect_ok();
        create_user(&server.admin(), "pause", "b", &["viewer"]).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        // Neither the disabling (relayed once it was disabled) nor user b.
        assert_eq!(
            receiver.received().len(),
            1,
            "a disabled webhook got a delivery"
        );
        server
            .admin()
            .webhooks()
            .update_webhook(UpdateWebhookRequest {
                webhook: Some(Webhook {
                    name: hook.name.clone(),
                    state: State::Active as i32,
                    etag: disabled.etag,
                    ..Default::default()
                }),
                update_mask: mask(&["state"]),
            })
            .await
            .expect_ok();
        create_user(&server.admin(), "pause", "c", &["viewer"]).await;
        // webhook.updated (enabled) and user c; user b was never made a
        // delivery, since the webhook was disabled when it happened.
        let got = receiver.wait_for(3, Duration::from_secs(20)).await;
        let types: Vec<String> = got
            .iter()
            .map(|r| r.json()["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(types, ["user.created", "webhook.updated", "user.created"]);
        server
            .admin()
            .webhooks()
            .delete_webhook(DeleteWebhookRequest {
                name: hook.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_ok();
        create_user(&server.admin(), "pause", "d", &["viewer"]).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            receiver.received().len(),
            3,
            "a deleted webhook got a delivery"
        );
        server
            .admin()
            .webhooks()
            .list_deliveries(ListDeliveriesRequest {
                parent: hook.name.clone(),
                ..Default::default()
            })
            .await
            .expect_code(tonic::Code::NotFound);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_checked_and_private_targets_refused() {
    // A server in production settings: https only, no private targets.
    let backend = Backend::Sqlite;
    let mut server = TestServer::start(&backend).await.unwrap();
    create_org(&server.admin(), "ssrf", "SSRF").await;
    let create = |url: &str| {
        let c = server.admin();
        let url = url.to_owned();
        async move {
            c.webhooks()
                .create_webhook(CreateWebhookRequest {
                    parent: org_name("ssrf"),
                    webhook_id: String::new(),
                    webhook: Some(Webhook {
                        display_name: "Hook".into(),
                        url,
                        ..Default::default()
                    }),
                })
                .await
        }
    };
    for bad in [
        "http://hooks.example.com/in",
        "http://127.0.0.1:9/in",
        "https://127.0.0.1:9/in",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.7/in",
        "https://[::ffff:192.168.0.1]/in",
        "https://user:pw@hooks.example.com/in",
        "ftp://hooks.example.com/",
        "http://localhost/in",
    ] {
        create(bad).await.expect_invalid("webhook.url");
    }
    // An unknown event type names its entry.
    server
        .admin()
        .webhooks()
        .create_webhook(CreateWebhookRequest {
            parent: org_name("ssrf"),
            webhook_id: String::new(),
            webhook: Some(Webhook {
                display_name: "Hook".into(),
                url: "https://hooks.example.com/in".into(),
                event_types: vec!["user.created".into(), "user.exploded".into()],
                ..Default::default()
            }),
        })
        .await
        .expect_invalid("webhook.event_types[1]");

    // A name is checked on what it resolves to, at delivery: `localhost`
    // over https passes the URL rule but resolves to loopback, so every
    // attempt is refused before connecting.
    let receiver = Receiver::start().await;
    let port = receiver
        .url()
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let hook = create_hook(
        &server,
        "ssrf",
        "local",
        &format!("https://localhost:{port}/hook"),
        &["user.created"],
    )
    .await;
    create_user(&server.admin(), "ssrf", "a", &["viewer"]).await;
    let attempted = settled(&server, &hook.name, 1, Duration::from_secs(20))
        .await
        .remove(0);
    // A refusal by policy is not retried: the same address would be
    // refused again.
    assert_eq!(
        (attempted.status, attempted.attempts),
        (DeliveryStatus::Dead as i32, 1)
    );
    assert!(
        attempted.last_error.contains("address refused")
            && attempted.last_error.contains("loopback"),
        "{}",
        attempted.last_error
    );
    assert_eq!(attempted.last_response_code, 0);
    assert!(receiver.received().is_empty(), "the receiver was reached");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_replica_makes_deliveries_and_only_a_worker_sends_them() {
    let Some(backend) = backends()
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres { .. }))
    else {
        return;
    };
    let mut api = TestServer::start_configured(&backend, |c| {
        c.roles = "api".into();
        c.webhook_allow_loopback = true;
    })
    .await
    .unwrap();
    let receiver = Receiver::start().await;
    create_org(&api.admin(), "split", "Split").await;
    let hook = create_hook(&api, "split", "crm", &receiver.url(), &["user.created"]).await;
    create_user(&api.admin(), "split", "a", &["viewer"]).await;
    // The api replica's relay makes the delivery; nobody sends it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries(&api, &hook.name).await.is_empty() {
        assert!(Instant::now() < deadline, "no delivery made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receiver.received().is_empty(),
        "an api-only replica sent it"
    );
    let pending = deliveries(&api, &hook.name).await;
    assert_eq!(
        (pending[0].status, pending[0].attempts),
        (DeliveryStatus::Pending as i32, 0)
    );

    // A worker replica on the same database sends it.
    let mut worker = api
        .start_replica(|c| {
            c.roles = "worker".into();
            c.webhook_allow_loopback = true;
        })
        .await
        .unwrap();
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].event_id(), pending[0].event_id);
    settled(&api, &hook.name, 1, Duration::from_secs(10)).await;
    worker.stop().await.unwrap();
    api.stop().await.unwrap();
}
