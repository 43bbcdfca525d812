//! Usage counters end to end: calls made with API keys are counted per
//! principal, key and method with the cost their proto option declares,
//! flushed in batches, and read back with `UsageService.GetUsage` over
//! gRPC and HTTP/JSON (filters, granularities, bad input, other
//! organizations); each used key's `last_used_time` follows, and ListApiKeys
//! filters on it. The flusher's own runs (interval, shutdown) and its
//! failure handling (counts kept and merged, deleted organizations
//! skipped, `last_used_time` never lowered) are checked on the store of a
//! running server.

use std::{sync::Arc, time::Duration};

use tollgate_client::{
    TollgateChannel,
    prost_types::Timestamp,
    tonic::{Response, Status},
    v1::usage_service_client::UsageServiceClient,
};
use tollgate_e2e::{
    Client, Code, TestServer,
    curl::{self, Version},
    each_backend,
    fixtures::{create_key, create_org, create_sa, create_user, org_name, sa_name},
    rpc::RpcResult as _,
    v1::{
        ApiKey, GetApiKeyRequest, GetOrganizationRequest, GetUsageRequest, GetUsageResponse,
        ListApiKeysRequest, ListServiceAccountsRequest, UsageRecord,
    },
};
use tollgate_server::{
    Config,
    domain::{
        authz::{Credential, Principal, Roles},
        names::PrincipalKind,
    },
    policy::Policies,
    store::Store,
    usage::{Counts, Record, Usage, UsageKey},
};

const GET_ORG: &str = "/tollgate.v1.OrganizationService/GetOrganization";
const LIST_SAS: &str = "/tollgate.v1.ServiceAccountService/ListServiceAccounts";
const MINUTE: i64 = 60_000_000;

fn usage(client: &Client) -> UsageServiceClient<TollgateChannel> {
    UsageServiceClient::new(client.channel())
}

/// The cost the proto option of `path` declares.
fn cost_of(path: &str) -> i64 {
    let policies = Policies::load(tollgate::FILE_DESCRIPTOR_SET).expect("policies load");
    i64::from(policies.get(path).expect("a served method").declared.cost)
}

fn now_micros() -> i64 {
    tollgate_server::domain::now_micros()
}

fn ts(micros: i64) -> Timestamp {
    tollgate_server::domain::timestamp(micros)
}

fn micros_of(ts: &Timestamp) -> i64 {
    ts.seconds * 1_000_000 + i64::from(ts.nanos / 1000)
}

fn floor_minute(t: i64) -> i64 {
    t - t.rem_euclid(MINUTE)
}

/// A timestamp as filters and query strings take it.
fn rfc3339(micros: i64) -> String {
    ts(micros).to_string()
}

async fn get_usage(
    client: &Client,
    req: GetUsageRequest,
) -> Result<Response<GetUsageResponse>, Status> {
    usage(client).get_usage(req).await
}

/// acme's usage, `total` granularity, with `edit` applied to the request.
async fn totals(client: &Client, edit: impl FnOnce(&mut GetUsageRequest)) -> GetUsageResponse {
    let mut req = GetUsageRequest {
        parent: org_name("acme"),
        granularity: "total".into(),
        ..Default::default()
    };
    edit(&mut req);
    get_usage(client, req).await.expect_ok()
}

/// (principal, api_key, method, calls, refused, cost) of each record,
/// sorted.
fn rows(r: &GetUsageResponse) -> Vec<(String, String, String, i64, i64, i64)> {
    let mut out: Vec<_> = r
        .records
        .iter()
        .map(|r| {
            (
                r.principal.clone(),
                r.api_key.clone(),
                r.method.clone(),
                r.calls,
                r.refused,
                r.cost,
            )
        })
        .collect();
    out.sort();
    out
}

async fn get_org(client: &Client, n: usize) {
    for _ in 0..n {
        client
            .organizations()
            .get_organization(GetOrganizationRequest {
                name: org_name("acme"),
            })
            .await
            .expect_ok();
    }
}

async fn list_sas(client: &Client, n: usize) {
    for _ in 0..n {
        client
            .service_accounts()
            .list_service_accounts(ListServiceAccountsRequest {
                parent: org_name("acme"),
                ..Default::default()
            })
            .await
            .expect_ok();
    }
}

async fn get_key(admin: &Client, name: &str) -> ApiKey {
    admin
        .api_keys()
        .get_api_key(GetApiKeyRequest { name: name.into() })
        .await
        .expect_ok()
}

/// The ids of `parent`'s keys matching `filter`, sorted.
async fn keys_matching(admin: &Client, parent: &str, filter: &str) -> Vec<String> {
    let mut names: Vec<String> = admin
        .api_keys()
        .list_api_keys(ListApiKeysRequest {
            parent: parent.into(),
            filter: filter.into(),
            ..Default::default()
        })
        .await
        .expect_ok()
        .api_keys
        .into_iter()
        .map(|k| k.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_per_key_and_method_and_read_back() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        create_org(&admin, "beta", "Beta").await;
        let bot = create_sa(&admin, "acme", "bot", &["viewer"]).await.name;
        let k1 = create_key(&admin, &bot, "k1").await;
        let k2 = create_key(&admin, &bot, "k2").await;
        let alice = create_user(&admin, "acme", "alice", &["viewer"]).await.name;
        let unused = create_key(&admin, &alice, "never used").await;
        let beta_admin_sa = create_sa(&admin, "beta", "boss", &["admin"]).await.name;
        let beta_admin = server.client(&create_key(&admin, &beta_admin_sa, "boss").await.secret);

        let before = now_micros();
        let c1 = server.client(&k1.secret);
        let c2 = server.client(&k2.secret);
        get_org(&c1, 5).await;
        list_sas(&c1, 3).await;
        get_org(&c2, 2).await;
        let after = now_micros();
        assert!(server.flush_usage().await? >= 3, "rows written");
        assert_eq!(server.flush_usage().await?, 0, "nothing left to write");

        // Total: one record per principal, key and method, exactly the
        // calls made, charged what each method's option says.
        let (g, l) = (cost_of(GET_ORG), cost_of(LIST_SAS));
        let all = totals(&admin, |_| {}).await;
        let k1_get = (
            bot.clone(),
            k1.name.clone(),
            GET_ORG.to_owned(),
            5,
            0,
            5 * g,
        );
        let k1_list = (
            bot.clone(),
            k1.name.clone(),
            LIST_SAS.to_owned(),
            3,
            0,
            3 * l,
        );
        let k2_get = (
            bot.clone(),
            k2.name.clone(),
            GET_ORG.to_owned(),
            2,
            0,
            2 * g,
        );
        let mut want = vec![k1_get, k1_list.clone(), k2_get.clone()];
        want.sort();
        assert_eq!(rows(&all), want);
        assert_eq!(all.total_calls, 10);
        assert_eq!(all.total_cost, 7 * g + 3 * l);
        let range_start = all.records[0].start_time.as_ref().map(micros_of);
        assert!(
            all.records
                .iter()
                .all(|r| r.start_time.as_ref().map(micros_of) == range_start),
            "total records start at the range's start"
        );

        // Filters.
        let by_bot = totals(&admin, |r| r.principal = bot.clone()).await;
        assert_eq!(rows(&by_bot), want);
        let by_alice = totals(&admin, |r| r.principal = alice.clone()).await;
        assert!(by_alice.records.is_empty());
        assert_eq!((by_alice.total_calls, by_alice.total_cost), (0, 0));
        let by_k2 = totals(&admin, |r| r.api_key = k2.name.clone()).await;
        assert_eq!(rows(&by_k2), [k2_get]);
        let by_method = totals(&admin, |r| r.method = LIST_SAS.into()).await;
        assert_eq!(rows(&by_method), [k1_list]);
        assert_eq!(by_method.total_calls, 3);
        let narrow = totals(&admin, |r| {
            r.api_key = k1.name.clone();
            r.method = GET_ORG.into();
            r.principal = bot.clone();
        })
        .await;
        assert_eq!(narrow.total_calls, 5);

        // Buckets: aligned to their width, holding the same calls.
        for (granularity, width) in [("minute", 60), ("hour", 3600), ("day", 86_400), ("", 3600)] {
            let r = get_usage(
                &admin,
                GetUsageRequest {
                    parent: org_name("acme"),
                    granularity: granularity.into(),
                    ..Default::default()
                },
            )
            .await
            .expect_ok();
            assert_eq!(r.total_calls, 10, "{granularity}");
            assert!(r.records.len() >= 3, "{granularity}: {:?}", r.records);
            let starts: Vec<i64> = r
                .records
                .iter()
                .map(|x| micros_of(x.start_time.as_ref().expect("a start")))
                .collect();
            assert!(
                starts.windows(2).all(|w| w[0] <= w[1]),
                "ordered by start: {starts:?}"
            );
            for (s, rec) in starts.iter().zip(&r.records) {
                assert_eq!(s % (width * 1_000_000), 0, "{granularity}: {rec:?}");
                assert!(
                    *s <= after && *s + width * 1_000_000 > before,
                    "{granularity}: {rec:?}"
                );
            }
        }
        let minutes = get_usage(
            &admin,
            GetUsageRequest {
                parent: org_name("acme"),
                granularity: "minute".into(),
                start_time: Some(ts(before)),
                end_time: Some(ts(after + 1)),
                ..Default::default()
            },
        )
        .await
        .expect_ok();
        assert_eq!(
            minutes.total_calls, 10,
            "the calls' own minutes are in range"
        );
        let past = get_usage(
            &admin,
            GetUsageRequest {
                parent: org_name("acme"),
                start_time: Some(ts(before - 3 * 3600 * 1_000_000)),
                end_time: Some(ts(before - 2 * 3600 * 1_000_000)),
                ..Default::default()
            },
        )
        .await
        .expect_ok();
        assert!(past.records.is_empty() && past.total_calls == 0, "{past:?}");

        // Counts add up across flushes.
        get_org(&c1, 2).await;
        server.flush_usage().await?;
        let again = totals(&admin, |r| {
            r.api_key = k1.name.clone();
            r.method = GET_ORG.into();
        })
        .await;
        assert_eq!(
            rows(&again),
            [(
                bot.clone(),
                k1.name.clone(),
                GET_ORG.to_owned(),
                7,
                0,
                7 * g
            )]
        );

        // Bad input, each naming its field.
        let bad = |edit: &dyn Fn(&mut GetUsageRequest)| {
            let mut req = GetUsageRequest {
                parent: org_name("acme"),
                ..Default::default()
            };
            edit(&mut req);
            get_usage(&admin, req)
        };
        let now = now_micros();
        bad(&|r| r.granularity = "week".into())
            .await
            .expect_invalid("granularity");
        bad(&|r| {
            r.start_time = Some(ts(now));
            r.end_time = Some(ts(now - MINUTE));
        })
        .await
        .expect_invalid("end_time");
        bad(&|r| {
            r.start_time = Some(ts(now - 32 * 86_400 * 1_000_000));
            r.end_time = Some(ts(now));
        })
        .await
        .expect_invalid("end_time");
        bad(&|r| {
            r.start_time = Some(Timestamp {
                seconds: 1,
                nanos: -5,
            })
        })
        .await
        .expect_invalid("start_time");
        bad(&|r| r.principal = sa_name("beta", "boss"))
            .await
            .expect_invalid("principal");
        bad(&|r| r.principal = "bot".into())
            .await
            .expect_invalid("principal");
        bad(&|r| r.api_key = format!("{alice}/keys/x"))
            .await
            .expect_invalid("api_key");
        bad(&|r| r.api_key = format!("{}/apiKeys/x", sa_name("beta", "boss")))
            .await
            .expect_invalid("api_key");
        bad(&|r| r.method = "GetOrganization".into())
            .await
            .expect_invalid("method");
        bad(&|r| r.parent = "acme".into())
            .await
            .expect_invalid("parent");
        // 31 days exactly is fine.
        bad(&|r| {
            r.start_time = Some(ts(now - 31 * 86_400 * 1_000_000));
            r.end_time = Some(ts(now));
            r.granularity = "day".into();
        })
        .await
        .expect_ok();

        // Another organization's admin learns nothing; a missing
        // organization is NOT_FOUND to the platform admin.
        let mut req = GetUsageRequest {
            parent: org_name("acme"),
            ..Default::default()
        };
        get_usage(&beta_admin, req.clone())
            .await
            .expect_code(Code::PermissionDenied);
        req.parent = org_name("beta");
        let own = get_usage(&beta_admin, req.clone()).await.expect_ok();
        assert!(
            own.records
                .iter()
                .all(|r| r.principal.starts_with("organizations/beta/")),
            "{own:?}"
        );
        req.parent = org_name("nowhere");
        get_usage(&admin, req).await.expect_code(Code::NotFound);

        // last_used_time: the minute of the latest call, set on used keys
        // only.
        for key in [&k1, &k2] {
            let got = get_key(&admin, &key.name).await;
            let t = micros_of(
                got.last_used_time
                    .as_ref()
                    .expect("a used key has a last use"),
            );
            assert_eq!(t % MINUTE, 0, "to the minute");
            assert!(
                t >= floor_minute(before) && t <= now_micros(),
                "{t} vs {before}"
            );
        }
        assert_eq!(get_key(&admin, &unused.name).await.last_used_time, None);
        let mut used = vec![k1.name.clone(), k2.name.clone()];
        used.sort();
        assert_eq!(
            keys_matching(&admin, &bot, "last_used_time != null").await,
            used
        );
        assert!(
            keys_matching(&admin, &bot, "last_used_time = null")
                .await
                .is_empty()
        );
        assert_eq!(
            keys_matching(&admin, &alice, "last_used_time = null").await,
            std::slice::from_ref(&unused.name)
        );
        let since = format!("\"{}\"", rfc3339(floor_minute(before)));
        assert_eq!(
            keys_matching(&admin, &bot, &format!("last_used_time >= {since}")).await,
            used
        );
        assert!(
            keys_matching(&admin, &bot, &format!("last_used_time < {since}"))
                .await
                .is_empty()
        );
        // A key never used matches no comparison, only `= null`.
        assert!(
            keys_matching(&admin, &alice, "last_used_time < \"2100-01-01T00:00:00Z\"")
                .await
                .is_empty()
        );
        admin
            .api_keys()
            .list_api_keys(ListApiKeysRequest {
                parent: bot.clone(),
                filter: "last_used_time > null".into(),
                ..Default::default()
            })
            .await
            .expect_invalid("filter");
        Ok(())
    })
    .await;
}

/// GetUsage over HTTP/JSON, as curl sends it: the query string carries the
/// filters and times, int64 figures come back as JSON strings, and bad
/// input is a 400 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_over_http_json() {
    if curl::bin().is_none() {
        return;
    }
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let bot = create_sa(&admin, "acme", "bot", &["viewer"]).await.name;
        let key = create_key(&admin, &bot, "k").await;
        let before = now_micros();
        get_org(&server.client(&key.secret), 4).await;
        server.flush_usage().await?;

        let auth = format!("authorization: Bearer {}", server.admin_key());
        let get = async |query: &str| {
            let url = format!(
                "http://{}/v1/organizations/acme/usage?{query}",
                server.grpc_addr()
            );
            curl::request(Version::Http1, &url, &["-H", &auth]).await
        };
        let start = rfc3339(floor_minute(before));
        let r = get(&format!(
            "granularity=minute&startTime={start}&apiKey={}&method={GET_ORG}",
            key.name
        ))
        .await?;
        anyhow::ensure!(r.status == 200, "{}: {}", r.status, r.text());
        let body = r.json()?;
        let records = body["records"].as_array().cloned().unwrap_or_default();
        let calls: i64 = records
            .iter()
            .map(|x| {
                x["calls"]
                    .as_str()
                    .and_then(|c| c.parse::<i64>().ok())
                    .unwrap_or(0)
            })
            .sum();
        assert_eq!(calls, 4, "{body}");
        assert_eq!(body["totalCalls"], "4", "{body}");
        assert_eq!(
            body["totalCost"],
            (4 * cost_of(GET_ORG)).to_string(),
            "{body}"
        );
        assert_eq!(records[0]["principal"], bot.as_str(), "{body}");
        assert_eq!(records[0]["apiKey"], key.name.as_str(), "{body}");
        assert!(
            records[0]["startTime"]
                .as_str()
                .is_some_and(|t| t.ends_with(":00Z")),
            "{body}"
        );

        let r = get("granularity=fortnight").await?;
        assert_eq!(r.status, 400, "{}", r.text());
        let body = r.json()?;
        let field = body["details"]
            .as_array()
            .and_then(|d| {
                d.iter()
                    .find_map(|d| d["fieldViolations"][0]["field"].as_str())
            })
            .map(str::to_owned);
        assert_eq!(field.as_deref(), Some("granularity"), "{body}");
        Ok(())
    })
    .await;
}

/// The cost is whatever the proto option says: a server whose descriptors
/// charge GetOrganization 7 counts 7 per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_comes_from_the_proto_option() {
    let fds = tollgate_e2e::policy::with_cost("OrganizationService", "GetOrganization", 7);
    for backend in tollgate_e2e::backends() {
        let policies = Policies::load(&fds).expect("edited policies load");
        let mut server = TestServer::start_with_policies(&backend, policies)
            .await
            .expect("server starts");
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let bot = create_sa(&admin, "acme", "bot", &["viewer"]).await.name;
        let key = create_key(&admin, &bot, "k").await;
        get_org(&server.client(&key.secret), 3).await;
        server.flush_usage().await.expect("flushed");
        let r = totals(&admin, |_| {}).await;
        assert_eq!((r.total_calls, r.total_cost), (3, 21), "[{backend}] {r:?}");
        server.stop().await.expect("clean stop");
    }
}

/// Without a test's flush: the flusher writes every interval, and a clean
/// stop writes what is left after the listener drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flusher_writes_on_its_interval_and_at_shutdown() {
    for backend in tollgate_e2e::backends() {
        let mut server = TestServer::start_configured(&backend, |c: &mut Config| {
            c.usage_flush_interval = Duration::from_millis(200);
        })
        .await
        .expect("server starts");
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let bot = create_sa(&admin, "acme", "bot", &["viewer"]).await.name;
        let key = create_key(&admin, &bot, "k").await;
        let client = server.client(&key.secret);
        get_org(&client, 3).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = totals(&admin, |_| {}).await;
            if r.total_calls == 3 {
                break;
            }
            assert!(r.total_calls < 3, "[{backend}] {r:?}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "[{backend}] not flushed within 10 s at a 200 ms interval"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.stop().await.expect("clean stop");

        // A long interval: only the shutdown flush can write these.
        let mut server = TestServer::start(&backend).await.expect("server starts");
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let bot = create_sa(&admin, "acme", "bot", &["viewer"]).await.name;
        let key = create_key(&admin, &bot, "k").await;
        get_org(&server.client(&key.secret), 4).await;
        assert!(server.usage().held_calls() >= 4, "held until the stop");
        server.restart().await.expect("restarts");
        let admin = server.admin();
        let r = totals(&admin, |_| {}).await;
        assert_eq!(r.total_calls, 4, "[{backend}] written at shutdown: {r:?}");
        assert!(get_key(&admin, &key.name).await.last_used_time.is_some());
        server.stop().await.expect("clean stop");
    }
}

async fn second_store(server: &TestServer) -> Store {
    tollgate_server::open_store(&Config {
        database_url: server.database_url().to_owned(),
        db_pool_size: 2,
        ..Default::default()
    })
    .await
    .expect("a second store on the test database")
}

fn record(org: &str, bucket: i64, principal: &str, key: &str, method: &str, calls: u64) -> Record {
    Record {
        key: UsageKey {
            org: org.into(),
            bucket_start: bucket,
            principal: principal.into(),
            api_key: key.into(),
            method: method.into(),
        },
        counts: Counts {
            calls,
            refused: 1,
            cost: calls * 2,
        },
    }
}

/// The flush on a failing database, on a deleted organization, and the
/// batches: counts kept and merged into the next flush, rows of a gone
/// organization skipped without failing the others, `last_used_time`
/// never lowered, more rows than one statement takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_survive_failures_and_batch() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let bot = create_sa(&admin, "acme", "bot", &["viewer"]).await.name;
        let key = create_key(&admin, &bot, "k").await;
        let store = second_store(server).await;

        // A flush that fails keeps its counts for the next.
        let usage = Usage::new();
        let principal = Principal::new(
            "acme".into(),
            PrincipalKind::ServiceAccount,
            "bot".into(),
            Roles::default(),
        )
        .with_credential(Credential::ApiKey(key.name.clone().into()));
        for _ in 0..4 {
            usage.record(&principal, GET_ORG, 3, false);
        }
        let broken = second_store(server).await;
        broken.db.close(Duration::ZERO).await;
        assert!(
            usage.flush_now(&broken).await.is_err(),
            "a closed pool fails"
        );
        assert_eq!(usage.held_calls(), 4, "kept");
        usage.record(&principal, GET_ORG, 3, true);
        // A principal of an organization that no longer exists.
        let gone = Principal::new(
            "gone".into(),
            PrincipalKind::ServiceAccount,
            "ghost".into(),
            Roles::default(),
        );
        usage.record(&gone, GET_ORG, 3, false);
        assert_eq!(
            usage.flush_now(&store).await?,
            2,
            "merged into one acme row, plus gone's"
        );
        assert_eq!(usage.held_calls(), 0);
        assert_eq!(usage.dropped_calls(), 0);
        let r = totals(&admin, |r| r.principal = bot.clone()).await;
        assert_eq!(
            rows(&r),
            [(bot.clone(), key.name.clone(), GET_ORG.to_owned(), 5, 1, 15)],
            "the failed flush's calls and the later one's"
        );

        // last_used_time only moves forward.
        let latest = micros_of(
            get_key(&admin, &key.name)
                .await
                .last_used_time
                .as_ref()
                .expect("used"),
        );
        store
            .write_usage(Arc::new(vec![record(
                "acme",
                latest - 10 * MINUTE,
                &bot,
                &key.name,
                GET_ORG,
                1,
            )]))
            .await?;
        assert_eq!(
            get_key(&admin, &key.name)
                .await
                .last_used_time
                .as_ref()
                .map(micros_of),
            Some(latest),
            "an older minute does not lower it"
        );
        store
            .write_usage(Arc::new(vec![record(
                "acme",
                latest + MINUTE,
                &bot,
                &key.name,
                GET_ORG,
                1,
            )]))
            .await?;
        assert_eq!(
            get_key(&admin, &key.name)
                .await
                .last_used_time
                .as_ref()
                .map(micros_of),
            Some(latest + MINUTE)
        );

        // More rows than one statement holds, and more keys than one
        // last_used_time statement: all written.
        let other = create_sa(&admin, "acme", "many", &["viewer"]).await.name;
        let bucket = floor_minute(now_micros()) - 5 * MINUTE;
        let batch: Vec<Record> = (0..2500)
            .map(|i| record("acme", bucket, &other, "", &format!("/x.v1.S/M{i:04}"), 2))
            .collect();
        store.write_usage(Arc::new(batch.clone())).await?;
        store.write_usage(Arc::new(batch)).await?;
        let r = totals(&admin, |r| r.principal = other.clone()).await;
        assert_eq!(r.records.len(), 2500);
        assert_eq!(r.total_calls, 2 * 2500 * 2, "both writes added up");
        assert!(
            r.records
                .iter()
                .all(|x| x.calls == 4 && x.refused == 2 && x.cost == 8)
        );
        let by_minute = get_usage(
            &admin,
            GetUsageRequest {
                parent: org_name("acme"),
                principal: other.clone(),
                granularity: "minute".into(),
                method: "/x.v1.S/M0007".into(),
                ..Default::default()
            },
        )
        .await
        .expect_ok();
        assert_eq!(
            by_minute.records,
            [UsageRecord {
                start_time: Some(ts(bucket)),
                principal: other.clone(),
                api_key: String::new(),
                method: "/x.v1.S/M0007".into(),
                calls: 4,
                refused: 2,
                cost: 8,
            }]
        );
        let many_keys: Vec<Record> = (0..1500)
            .map(|i| {
                record(
                    "acme",
                    bucket,
                    &other,
                    &format!("{other}/apiKeys/missing{i:04}"),
                    GET_ORG,
                    1,
                )
            })
            .collect();
        store.write_usage(Arc::new(many_keys)).await?;

        // Too many records for one answer: refused, asking to narrow.
        let wide: Vec<Record> = (0..10_001)
            .map(|i| record("acme", bucket, &other, "", &format!("/y.v1.S/M{i:05}"), 1))
            .collect();
        store.write_usage(Arc::new(wide)).await?;
        get_usage(
            &admin,
            GetUsageRequest {
                parent: org_name("acme"),
                granularity: "total".into(),
                ..Default::default()
            },
        )
        .await
        .expect_invalid("granularity");
        Ok(())
    })
    .await;
}
