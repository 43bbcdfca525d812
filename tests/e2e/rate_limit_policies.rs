//! RateLimitPolicyService end to end: CRUD with defaults written out,
//! generated ids and duplicates, keyset pages, updates under masks and
//! etags, every refused input naming its field, other organizations kept
//! out, one event per write, HTTP/JSON through curl, and what the
//! enforcement engine reads: every policy compiled in matching order, the
//! fingerprint another replica polls, and this replica's change signal.

use std::collections::HashMap;

use serde_json::{Value, json};
use tollgate_e2e::{
    Client, Code, TestServer, concurrently, curl, each_backend,
    fixtures::{
        create_key, create_org, create_rate_limit_policy, create_sa, mask, micros, org_name,
    },
    outbox,
    rpc::{RpcResult as _, violated_fields},
    v1::{
        CreateRateLimitPolicyRequest, DeleteOrganizationRequest, DeleteRateLimitPolicyRequest,
        GetRateLimitPolicyRequest, ListRateLimitPoliciesRequest, RateLimit, RateLimitPolicy,
        RateLimitQuota, RateLimitSelector, UpdateRateLimitPolicyRequest, rate_limit,
        rate_limit_policy::{Algorithm, FailureMode, KeyBy},
        rate_limit_quota,
    },
};
use tollgate_server::{
    Config,
    domain::{
        names::RateLimitPolicyName,
        rate_limit_policy::{
            self as rules, KeyBy as RuleKeyBy, MethodMatch, PolicySpec, QuotaPeriod, RateAlgorithm,
        },
    },
    events::WriteContext,
    ratelimit::{Algorithm as LimitAlgorithm, QuotaWindow},
    store::{Store, rate_limit_policies::NewRateLimitPolicy},
};

const SECOND: i32 = rate_limit::Period::Second as i32;
const MINUTE: i32 = rate_limit::Period::Minute as i32;

fn policy_name(org: &str, id: &str) -> String {
    format!("organizations/{org}/rateLimitPolicies/{id}")
}

fn rate(limit: i64, period: i32, burst: Option<i64>) -> Option<RateLimit> {
    Some(RateLimit {
        limit,
        period,
        burst,
    })
}

fn per_minute(limit: i64) -> RateLimitPolicy {
    RateLimitPolicy {
        display_name: "Per minute".into(),
        limit: rate(limit, MINUTE, None),
        ..Default::default()
    }
}

async fn create(
    client: &Client,
    org: &str,
    id: &str,
    p: RateLimitPolicy,
) -> Result<tollgate_client::tonic::Response<RateLimitPolicy>, tollgate_client::tonic::Status> {
    client
        .rate_limit_policies()
        .create_rate_limit_policy(CreateRateLimitPolicyRequest {
            parent: org_name(org),
            rate_limit_policy_id: id.into(),
            rate_limit_policy: Some(p),
        })
        .await
}

async fn get(client: &Client, name: &str) -> RateLimitPolicy {
    client
        .rate_limit_policies()
        .get_rate_limit_policy(GetRateLimitPolicyRequest { name: name.into() })
        .await
        .expect_ok()
}

async fn update(
    client: &Client,
    p: RateLimitPolicy,
    paths: &[&str],
) -> Result<tollgate_client::tonic::Response<RateLimitPolicy>, tollgate_client::tonic::Status> {
    client
        .rate_limit_policies()
        .update_rate_limit_policy(UpdateRateLimitPolicyRequest {
            rate_limit_policy: Some(p),
            update_mask: if paths.is_empty() { None } else { mask(paths) },
        })
        .await
}

async fn delete(
    client: &Client,
    name: &str,
    etag: &str,
) -> Result<tollgate_client::tonic::Response<()>, tollgate_client::tonic::Status> {
    client
        .rate_limit_policies()
        .delete_rate_limit_policy(DeleteRateLimitPolicyRequest {
            name: name.into(),
            etag: etag.into(),
        })
        .await
}

async fn store_of(server: &TestServer) -> Store {
    tollgate_server::open_store(&Config {
        database_url: server.database_url().to_owned(),
        db_pool_size: 2,
        ..Default::default()
    })
    .await
    .expect("a second store on the test database")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_list_delete() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;

        // Defaults are written out, so a read shows what applies.
        let p = create(&admin, "acme", "basic", per_minute(100))
            .await
            .expect_ok();
        assert_eq!(p.name, policy_name("acme", "basic"));
        assert!(!p.uid.is_empty() && !p.etag.is_empty());
        assert_eq!(p.display_name, "Per minute");
        assert_eq!(p.limit, rate(100, MINUTE, None), "burst stays unset");
        assert_eq!(p.quota, None);
        assert_eq!(p.selector, None);
        assert_eq!(p.algorithm, Algorithm::Gcra as i32);
        assert_eq!(p.failure_mode, FailureMode::FailOpen as i32);
        assert_eq!(p.key_by, KeyBy::Principal as i32);
        assert!(!p.shadow);
        assert!(p.create_time.is_some() && p.create_time == p.update_time);
        assert_eq!(get(&admin, &p.name).await, p);

        // Everything set.
        let headers: HashMap<String, String> = [("x-tenant".to_owned(), String::new())].into();
        let descriptors: HashMap<String, String> =
            [("generic_key".to_owned(), "slowpath".to_owned())].into();
        let full = RateLimitPolicy {
            display_name: "Everything".into(),
            selector: Some(RateLimitSelector {
                method: "/tollgate.v1.UserService/*".into(),
                principal: "organizations/acme/users/alice".into(),
                api_key: "organizations/acme/users/alice/apiKeys/k1".into(),
                oauth_client: "organizations/acme/clients/web".into(),
                headers,
                descriptors,
            }),
            limit: rate(10, SECOND, Some(20)),
            quota: Some(RateLimitQuota {
                limit: 10_000,
                period: rate_limit_quota::Period::Month as i32,
            }),
            algorithm: Algorithm::SlidingWindow as i32,
            shadow: true,
            failure_mode: FailureMode::FailClosed as i32,
            key_by: KeyBy::Descriptor as i32,
            ..Default::default()
        };
        let created = create(&admin, "acme", "full", full.clone())
            .await
            .expect_ok();
        assert_eq!(
            RateLimitPolicy {
                name: String::new(),
                uid: String::new(),
                create_time: None,
                update_time: None,
                etag: String::new(),
                ..created.clone()
            },
            full,
            "stored as sent"
        );

        // A generated id; a taken one is ALREADY_EXISTS.
        let generated = create(&admin, "acme", "", per_minute(5)).await.expect_ok();
        assert!(
            generated
                .name
                .starts_with("organizations/acme/rateLimitPolicies/"),
            "{}",
            generated.name
        );
        create(&admin, "acme", "basic", per_minute(1))
            .await
            .expect_code(Code::AlreadyExists);
        create(&admin, "nope", "basic", per_minute(1))
            .await
            .expect_code(Code::NotFound);

        // Keyset pages in id order.
        let mut names = Vec::new();
        let mut token = String::new();
        loop {
            let page = admin
                .rate_limit_policies()
                .list_rate_limit_policies(ListRateLimitPoliciesRequest {
                    parent: org_name("acme"),
                    page_size: 2,
                    page_token: token.clone(),
                })
                .await
                .expect_ok();
            assert!(page.rate_limit_policies.len() <= 2);
            names.extend(page.rate_limit_policies.into_iter().map(|p| p.name));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 3);
        admin
            .rate_limit_policies()
            .list_rate_limit_policies(ListRateLimitPoliciesRequest {
                parent: org_name("nope"),
                ..Default::default()
            })
            .await
            .expect_code(Code::NotFound);

        // Delete, then it is gone; deleting again is NOT_FOUND.
        delete(&admin, &created.name, "").await.expect_ok();
        admin
            .rate_limit_policies()
            .get_rate_limit_policy(GetRateLimitPolicyRequest {
                name: created.name.clone(),
            })
            .await
            .expect_code(Code::NotFound);
        delete(&admin, &created.name, "")
            .await
            .expect_code(Code::NotFound);
        admin
            .rate_limit_policies()
            .get_rate_limit_policy(GetRateLimitPolicyRequest {
                name: "organizations/acme/clients/basic".into(),
            })
            .await
            .expect_invalid("name");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_follow_the_mask_and_the_etag() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let p = create(
            &admin,
            "acme",
            "p",
            RateLimitPolicy {
                quota: Some(RateLimitQuota {
                    limit: 1000,
                    period: rate_limit_quota::Period::Day as i32,
                }),
                ..per_minute(100)
            },
        )
        .await
        .expect_ok();

        // Only the masked field changes, though others are sent.
        let renamed = update(
            &admin,
            RateLimitPolicy {
                name: p.name.clone(),
                display_name: "Renamed".into(),
                limit: rate(1, SECOND, None),
                etag: p.etag.clone(),
                ..Default::default()
            },
            &["display_name"],
        )
        .await
        .expect_ok();
        assert_eq!(renamed.display_name, "Renamed");
        assert_eq!(renamed.limit, p.limit);
        assert_eq!(renamed.quota, p.quota);
        assert_ne!(renamed.etag, p.etag);
        assert!(micros(renamed.update_time.as_ref()) > micros(p.update_time.as_ref()));

        // The old etag is stale now: ABORTED, nothing changed.
        update(
            &admin,
            RateLimitPolicy {
                name: p.name.clone(),
                display_name: "Lost".into(),
                etag: p.etag.clone(),
                ..Default::default()
            },
            &["display_name"],
        )
        .await
        .expect_code(Code::Aborted);
        delete(&admin, &p.name, &p.etag)
            .await
            .expect_code(Code::Aborted);
        assert_eq!(get(&admin, &p.name).await, renamed);

        // An implicit mask: the fields set. Each is replaced whole: the new
        // limit has no burst.
        let implicit = update(
            &admin,
            RateLimitPolicy {
                name: p.name.clone(),
                limit: rate(7, SECOND, Some(3)),
                shadow: true,
                key_by: KeyBy::Organization as i32,
                ..Default::default()
            },
            &[],
        )
        .await
        .expect_ok();
        assert_eq!(implicit.limit, rate(7, SECOND, Some(3)));
        assert!(implicit.shadow);
        assert_eq!(implicit.key_by, KeyBy::Organization as i32);
        assert_eq!(implicit.display_name, "Renamed");
        let replaced = update(
            &admin,
            RateLimitPolicy {
                name: p.name.clone(),
                limit: rate(8, SECOND, None),
                ..Default::default()
            },
            &["limit"],
        )
        .await
        .expect_ok();
        assert_eq!(replaced.limit, rate(8, SECOND, None));

        // A masked field left unset is cleared: the limit goes, the quota
        // stays; then the quota cannot go too.
        let no_rate = update(
            &admin,
            RateLimitPolicy {
                name: p.name.clone(),
                ..Default::default()
            },
            &["limit", "shadow"],
        )
        .await
        .expect_ok();
        assert_eq!(no_rate.limit, None);
        assert!(!no_rate.shadow);
        assert!(no_rate.quota.is_some());
        update(
            &admin,
            RateLimitPolicy {
                name: p.name.clone(),
                ..Default::default()
            },
            &["quota"],
        )
        .await
        .expect_invalid("rate_limit_policy.limit");
        // Nor may it count by sliding window with only a quota, nor key by
        // descriptor with no entries to key on.
        update(
            &admin,
            RateLimitPolicy {
                name: p.name.clone(),
                algorithm: Algorithm::SlidingWindow as i32,
                ..Default::default()
            },
            &["algorithm"],
        )
        .await
        .expect_invalid("rate_limit_policy.algorithm");
        update(
            &admin,
            RateLimitPolicy {
                name: p.name.clone(),
                key_by: KeyBy::Descriptor as i32,
                ..Default::default()
            },
            &["key_by"],
        )
        .await
        .expect_invalid("rate_limit_policy.key_by");
        // With a selector that has entries, in the same update, it may.
        let keyed = update(
            &admin,
            RateLimitPolicy {
                name: p.name.clone(),
                key_by: KeyBy::Descriptor as i32,
                selector: Some(RateLimitSelector {
                    descriptors: [("tenant".to_owned(), String::new())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &["key_by", "selector"],
        )
        .await
        .expect_ok();
        assert_eq!(keyed.key_by, KeyBy::Descriptor as i32);

        // Bad masks and bad values name their field.
        for (path, field) in [
            ("uid", "update_mask"),
            ("name", "update_mask"),
            ("limit.limit", "update_mask"),
            ("create_time", "update_mask"),
        ] {
            update(
                &admin,
                RateLimitPolicy {
                    name: p.name.clone(),
                    ..Default::default()
                },
                &[path],
            )
            .await
            .expect_invalid(field);
        }
        update(
            &admin,
            RateLimitPolicy {
                name: p.name.clone(),
                limit: rate(0, SECOND, None),
                ..Default::default()
            },
            &["limit"],
        )
        .await
        .expect_invalid("rate_limit_policy.limit.limit");
        update(
            &admin,
            RateLimitPolicy {
                name: p.name.clone(),
                selector: Some(RateLimitSelector {
                    method: "/tollgate.v1.NoService/Nope".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &["selector"],
        )
        .await
        .expect_invalid("rate_limit_policy.selector.method");
        update(
            &admin,
            RateLimitPolicy {
                name: "organizations/acme/rateLimitPolicies/missing".into(),
                display_name: "x".into(),
                ..Default::default()
            },
            &["display_name"],
        )
        .await
        .expect_code(Code::NotFound);
        update(
            &admin,
            RateLimitPolicy {
                name: "organizations/acme/clients/p".into(),
                ..Default::default()
            },
            &["display_name"],
        )
        .await
        .expect_invalid("rate_limit_policy.name");

        // Deleting with the current etag works.
        let current = get(&admin, &p.name).await;
        delete(&admin, &p.name, &current.etag).await.expect_ok();
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        create_org(&admin, "beta", "Beta").await;
        let selector = |f: fn(&mut RateLimitSelector)| {
            let mut s = RateLimitSelector::default();
            f(&mut s);
            RateLimitPolicy {
                selector: Some(s),
                ..per_minute(10)
            }
        };
        let cases: Vec<(&str, RateLimitPolicy, &str)> = vec![
            (
                "zero limit",
                RateLimitPolicy {
                    limit: rate(0, SECOND, None),
                    ..Default::default()
                },
                "rate_limit_policy.limit.limit",
            ),
            (
                "negative limit",
                RateLimitPolicy {
                    limit: rate(-3, SECOND, None),
                    ..Default::default()
                },
                "rate_limit_policy.limit.limit",
            ),
            (
                "burst 0",
                RateLimitPolicy {
                    limit: rate(10, SECOND, Some(0)),
                    ..Default::default()
                },
                "rate_limit_policy.limit.burst",
            ),
            (
                "no period",
                RateLimitPolicy {
                    limit: rate(10, 0, None),
                    ..Default::default()
                },
                "rate_limit_policy.limit.period",
            ),
            (
                "unknown period",
                RateLimitPolicy {
                    limit: rate(10, 99, None),
                    ..Default::default()
                },
                "rate_limit_policy.limit.period",
            ),
            (
                "zero quota",
                RateLimitPolicy {
                    quota: Some(RateLimitQuota {
                        limit: 0,
                        period: rate_limit_quota::Period::Day as i32,
                    }),
                    ..Default::default()
                },
                "rate_limit_policy.quota.limit",
            ),
            (
                "quota without a period",
                RateLimitPolicy {
                    quota: Some(RateLimitQuota {
                        limit: 10,
                        period: 0,
                    }),
                    ..Default::default()
                },
                "rate_limit_policy.quota.period",
            ),
            (
                "neither limit nor quota",
                RateLimitPolicy {
                    display_name: "Nothing".into(),
                    ..Default::default()
                },
                "rate_limit_policy.limit",
            ),
            (
                "unknown method",
                selector(|s| s.method = "/tollgate.v1.UserService/FlyUser".into()),
                "rate_limit_policy.selector.method",
            ),
            (
                "unparseable method: spaces",
                selector(|s| s.method = "/tollgate.v1.UserService/Get User".into()),
                "rate_limit_policy.selector.method",
            ),
            (
                "unparseable method: star inside",
                selector(|s| s.method = "/tollgate.v1.*/GetUser".into()),
                "rate_limit_policy.selector.method",
            ),
            (
                "unparseable method: no leading slash",
                selector(|s| s.method = "tollgate.v1.UserService/*".into()),
                "rate_limit_policy.selector.method",
            ),
            (
                "bad principal name",
                selector(|s| s.principal = "alice".into()),
                "rate_limit_policy.selector.principal",
            ),
            (
                "principal of another organization",
                selector(|s| s.principal = "organizations/beta/users/alice".into()),
                "rate_limit_policy.selector.principal",
            ),
            (
                "bad API key name",
                selector(|s| s.api_key = "organizations/acme/apiKeys/k".into()),
                "rate_limit_policy.selector.api_key",
            ),
            (
                "API key of another organization",
                selector(|s| s.api_key = "organizations/beta/users/bob/apiKeys/k".into()),
                "rate_limit_policy.selector.api_key",
            ),
            (
                "OAuth client of another organization",
                selector(|s| s.oauth_client = "organizations/beta/clients/web".into()),
                "rate_limit_policy.selector.oauth_client",
            ),
            (
                "header authorization",
                selector(|s| {
                    s.headers.insert("authorization".into(), String::new());
                }),
                "rate_limit_policy.selector.headers.authorization",
            ),
            (
                "header x-api-key",
                selector(|s| {
                    s.headers.insert("x-api-key".into(), String::new());
                }),
                "rate_limit_policy.selector.headers.x-api-key",
            ),
            (
                "header in upper case",
                selector(|s| {
                    s.headers.insert("X-Tenant".into(), String::new());
                }),
                "rate_limit_policy.selector.headers.X-Tenant",
            ),
            (
                "nine headers",
                selector(|s| {
                    for i in 0..9 {
                        s.headers.insert(format!("x-h{i}"), String::new());
                    }
                }),
                "rate_limit_policy.selector.headers",
            ),
            (
                "empty descriptor key",
                selector(|s| {
                    s.descriptors.insert(String::new(), "v".into());
                }),
                "rate_limit_policy.selector.descriptors.",
            ),
            (
                "key by descriptor without entries",
                RateLimitPolicy {
                    key_by: KeyBy::Descriptor as i32,
                    ..per_minute(10)
                },
                "rate_limit_policy.key_by",
            ),
            (
                "sliding window with only a quota",
                RateLimitPolicy {
                    algorithm: Algorithm::SlidingWindow as i32,
                    quota: Some(RateLimitQuota {
                        limit: 10,
                        period: rate_limit_quota::Period::Day as i32,
                    }),
                    ..Default::default()
                },
                "rate_limit_policy.algorithm",
            ),
            (
                "unknown algorithm",
                RateLimitPolicy {
                    algorithm: 7,
                    ..per_minute(10)
                },
                "rate_limit_policy.algorithm",
            ),
            (
                "unknown failure mode",
                RateLimitPolicy {
                    failure_mode: 3,
                    ..per_minute(10)
                },
                "rate_limit_policy.failure_mode",
            ),
            (
                "unknown key",
                RateLimitPolicy {
                    key_by: 6,
                    ..per_minute(10)
                },
                "rate_limit_policy.key_by",
            ),
            (
                "long display name",
                RateLimitPolicy {
                    display_name: "x".repeat(201),
                    ..per_minute(10)
                },
                "rate_limit_policy.display_name",
            ),
        ];
        for (i, (what, p, field)) in cases.into_iter().enumerate() {
            let s = create(&admin, "acme", &format!("p{i}"), p)
                .await
                .expect_code(Code::InvalidArgument);
            assert_eq!(
                violated_fields(&s),
                [field],
                "{what}: exactly one violation, naming the field ({})",
                s.message()
            );
        }
        create(&admin, "acme", "Bad_Id", per_minute(1))
            .await
            .expect_invalid("rate_limit_policy_id");
        create(&admin, "Acme", "p", per_minute(1))
            .await
            .expect_invalid("parent");
        // Several at once, each named.
        let s = create(
            &admin,
            "acme",
            "many",
            RateLimitPolicy {
                selector: Some(RateLimitSelector {
                    method: "nope".into(),
                    principal: "organizations/beta/users/x".into(),
                    ..Default::default()
                }),
                limit: rate(0, 0, Some(0)),
                ..Default::default()
            },
        )
        .await
        .expect_code(Code::InvalidArgument);
        let mut fields = violated_fields(&s);
        fields.sort();
        assert_eq!(
            fields,
            [
                "rate_limit_policy.limit.burst",
                "rate_limit_policy.limit.limit",
                "rate_limit_policy.limit.period",
                "rate_limit_policy.selector.method",
                "rate_limit_policy.selector.principal",
            ]
        );
        // Nothing was created.
        let list = admin
            .rate_limit_policies()
            .list_rate_limit_policies(ListRateLimitPoliciesRequest {
                parent: org_name("acme"),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert!(list.rate_limit_policies.is_empty(), "{list:?}");

        // Selectors that are fine: every prefix form, served methods, and
        // names of the organization (they need not exist yet).
        for (i, method) in [
            "/tollgate.v1.UserService/GetUser",
            "/tollgate.v1.UserService/*",
            "/tollgate.v1.*",
            "/*",
            "/grpc.health.v1.Health/Check",
        ]
        .into_iter()
        .enumerate()
        {
            create(
                &admin,
                "acme",
                &format!("ok{i}"),
                RateLimitPolicy {
                    selector: Some(RateLimitSelector {
                        method: method.into(),
                        principal: "organizations/acme/serviceAccounts/future".into(),
                        ..Default::default()
                    }),
                    ..per_minute(10)
                },
            )
            .await
            .expect_ok();
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_organizations_are_out_of_reach() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        create_org(&admin, "beta", "Beta").await;
        let key_of = async |org: &str, id: &str, role: &str| {
            let sa = create_sa(&admin, org, id, &[role]).await;
            server.client(&create_key(&admin, &sa.name, "k").await.secret)
        };
        let beta_admin = key_of("beta", "boss", "admin").await;
        let viewer = key_of("acme", "reader", "viewer").await;
        let editor = key_of("acme", "writer", "editor").await;
        let p = create_rate_limit_policy(&admin, "acme", "p").await;

        // Another organization's admin can do nothing here.
        let denied = Code::PermissionDenied;
        beta_admin
            .rate_limit_policies()
            .get_rate_limit_policy(GetRateLimitPolicyRequest {
                name: p.name.clone(),
            })
            .await
            .expect_code(denied);
        beta_admin
            .rate_limit_policies()
            .list_rate_limit_policies(ListRateLimitPoliciesRequest {
                parent: org_name("acme"),
                ..Default::default()
            })
            .await
            .expect_code(denied);
        create(&beta_admin, "acme", "mine", per_minute(1))
            .await
            .expect_code(denied);
        update(
            &beta_admin,
            RateLimitPolicy {
                name: p.name.clone(),
                display_name: "Hijacked".into(),
                ..Default::default()
            },
            &["display_name"],
        )
        .await
        .expect_code(denied);
        delete(&beta_admin, &p.name, "").await.expect_code(denied);
        // ... and learns nothing from a name that does not exist either.
        let s = beta_admin
            .rate_limit_policies()
            .get_rate_limit_policy(GetRateLimitPolicyRequest {
                name: policy_name("acme", "missing"),
            })
            .await
            .expect_code(denied);
        assert!(!s.message().contains("not found"), "{}", s.message());
        // Its own organization is fine.
        create(&beta_admin, "beta", "mine", per_minute(1))
            .await
            .expect_ok();

        // A viewer reads; an editor writes.
        assert_eq!(get(&viewer, &p.name).await, p);
        create(&viewer, "acme", "v", per_minute(1))
            .await
            .expect_code(denied);
        delete(&viewer, &p.name, "").await.expect_code(denied);
        let mine = create(&editor, "acme", "e", per_minute(1))
            .await
            .expect_ok();
        delete(&editor, &mine.name, "").await.expect_ok();
        assert_eq!(get(&admin, &p.name).await, p, "unchanged");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_leaves_one_event_with_its_actor() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let editor_sa = create_sa(&admin, "acme", "ed", &["editor"]).await;
        let editor = server.client(&create_key(&admin, &editor_sa.name, "k").await.secret);
        let before = outbox::last_id(server.database_url()).await;
        let created = create_rate_limit_policy(&editor, "acme", "p").await;
        let updated = update(
            &editor,
            RateLimitPolicy {
                name: created.name.clone(),
                display_name: "Changed".into(),
                ..Default::default()
            },
            &["display_name"],
        )
        .await
        .expect_ok();
        delete(&editor, &created.name, "").await.expect_ok();
        // A refused write leaves nothing.
        create(&editor, "acme", "bad", per_minute(0))
            .await
            .expect_code(Code::InvalidArgument);
        let rows = outbox::rows_after(server.database_url(), before).await;
        let types: Vec<_> = rows.iter().map(|r| r.event_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "rateLimitPolicy.created",
                "rateLimitPolicy.updated",
                "rateLimitPolicy.deleted"
            ]
        );
        let afters: Vec<RateLimitPolicy> = rows
            .iter()
            .map(|r| {
                assert_eq!(r.actor, editor_sa.name);
                assert_eq!(r.event.resource, created.name);
                assert_eq!(r.event.organization, org_name("acme"));
                let Some(tollgate::tollgate::v1::event::After::RateLimitPolicy(p)) = &r.event.after
                else {
                    panic!("{r:?} carries no policy");
                };
                p.clone()
            })
            .collect();
        assert_eq!(afters[0], created);
        assert_eq!(afters[1], updated);
        assert_eq!(
            afters[2], updated,
            "a deletion carries the policy as it was"
        );
        Ok(())
    })
    .await;
}

/// One HTTP/JSON call through curl, as the admin.
async fn http(
    server: &TestServer,
    method: &str,
    path_and_query: &str,
    body: Option<&Value>,
) -> anyhow::Result<curl::Response> {
    let url = format!("http://{}{path_and_query}", server.grpc_addr());
    let auth = format!("authorization: Bearer {}", server.admin_key());
    let data = body.map(Value::to_string);
    let mut args = vec!["-X", method, "-H", &auth];
    if let Some(data) = &data {
        args.extend([
            "-H",
            "content-type: application/json",
            "--data-binary",
            data,
        ]);
    }
    curl::request(curl::Version::Http1, &url, &args).await
}

fn http_violations(v: &Value) -> Vec<String> {
    v["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .flat_map(|d| d["fieldViolations"].as_array().cloned().unwrap_or_default())
        .map(|f| f["field"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_crud() {
    each_backend(async |server: &mut TestServer| {
        if curl::bin().is_none() {
            return Ok(());
        }
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        let base = "/v1/organizations/acme/rateLimitPolicies";

        // Create: the id in the query, the policy in the body; enums by
        // name, 64-bit integers as strings or numbers.
        let r = http(
            server,
            "POST",
            &format!("{base}?rateLimitPolicyId=users"),
            Some(&json!({
                "displayName": "User service",
                "selector": {
                    "method": "/tollgate.v1.UserService/*",
                    "headers": {"x-tenant": ""}
                },
                "limit": {"limit": "10", "period": "SECOND", "burst": 20},
                "quota": {"limit": 1000, "period": "DAY"},
                "failureMode": "FAIL_CLOSED",
                "keyBy": "DESCRIPTOR",
                "shadow": true
            })),
        )
        .await?;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json()?;
        assert_eq!(v["name"], "organizations/acme/rateLimitPolicies/users");
        assert_eq!(
            v["limit"],
            json!({"limit": "10", "period": "SECOND", "burst": "20"})
        );
        assert_eq!(v["quota"], json!({"limit": "1000", "period": "DAY"}));
        assert_eq!(v["algorithm"], "GCRA");
        assert_eq!(v["failureMode"], "FAIL_CLOSED");
        assert_eq!(v["keyBy"], "DESCRIPTOR");
        assert_eq!(v["shadow"], true);
        assert_eq!(v["selector"]["headers"], json!({"x-tenant": ""}));
        let etag = v["etag"].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            get(&admin, "organizations/acme/rateLimitPolicies/users")
                .await
                .limit,
            rate(10, SECOND, Some(20)),
            "the same policy over gRPC"
        );

        // Get and list.
        let r = http(server, "GET", &format!("{base}/users"), None).await?;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()?, v);
        let r = http(server, "GET", &format!("{base}?pageSize=10"), None).await?;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()?["rateLimitPolicies"], json!([v]));

        // Patch under a mask and the etag; a stale etag is 409.
        let r = http(
            server,
            "PATCH",
            &format!("{base}/users?updateMask=limit,displayName"),
            Some(&json!({
                "displayName": "Renamed",
                "limit": {"limit": 5, "period": "MINUTE"},
                "etag": etag
            })),
        )
        .await?;
        assert_eq!(r.status, 200, "{}", r.text());
        let patched = r.json()?;
        assert_eq!(patched["displayName"], "Renamed");
        assert_eq!(patched["limit"], json!({"limit": "5", "period": "MINUTE"}));
        assert_eq!(patched["quota"], v["quota"]);
        let r = http(
            server,
            "PATCH",
            &format!("{base}/users?updateMask=displayName"),
            Some(&json!({"displayName": "Lost", "etag": etag})),
        )
        .await?;
        assert_eq!(r.status, 409, "{}", r.text());

        // A bad policy is 400 with the field named.
        let r = http(
            server,
            "POST",
            &format!("{base}?rateLimitPolicyId=bad"),
            Some(&json!({
                "selector": {"headers": {"authorization": ""}},
                "limit": {"limit": 0, "period": "SECOND"}
            })),
        )
        .await?;
        assert_eq!(r.status, 400, "{}", r.text());
        let mut fields = http_violations(&r.json()?);
        fields.sort();
        assert_eq!(
            fields,
            [
                "rate_limit_policy.limit.limit",
                "rate_limit_policy.selector.headers.authorization"
            ]
        );

        // Delete with the current etag, then 404.
        let etag = patched["etag"].as_str().unwrap_or_default();
        let r = http(
            server,
            "DELETE",
            &format!("{base}/users?etag={}", etag.replace('"', "%22")),
            None,
        )
        .await?;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()?, json!({}));
        let r = http(server, "GET", &format!("{base}/users"), None).await?;
        assert_eq!(r.status, 404, "{}", r.text());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_reads_every_policy_and_sees_every_change() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        create_org(&admin, "beta", "Beta").await;
        // Another replica: a second store on the same database.
        let replica = store_of(server).await;
        assert_eq!(replica.fingerprint().await?, (0, None));
        assert!(replica.all_rules().await?.is_empty());

        create(
            &admin,
            "acme",
            "catch-all",
            RateLimitPolicy {
                quota: Some(RateLimitQuota {
                    limit: 1000,
                    period: rate_limit_quota::Period::Month as i32,
                }),
                ..Default::default()
            },
        )
        .await
        .expect_ok();
        create(
            &admin,
            "acme",
            "users",
            RateLimitPolicy {
                selector: Some(RateLimitSelector {
                    method: "/tollgate.v1.UserService/*".into(),
                    ..Default::default()
                }),
                algorithm: Algorithm::SlidingWindow as i32,
                failure_mode: FailureMode::FailClosed as i32,
                ..per_minute(60)
            },
        )
        .await
        .expect_ok();
        create(
            &admin,
            "acme",
            "alice",
            RateLimitPolicy {
                selector: Some(RateLimitSelector {
                    principal: "organizations/acme/users/alice".into(),
                    ..Default::default()
                }),
                limit: rate(5, SECOND, Some(2)),
                ..Default::default()
            },
        )
        .await
        .expect_ok();
        create_rate_limit_policy(&admin, "beta", "b").await;

        let rules = replica.all_rules().await?;
        let names: Vec<&str> = rules.iter().map(|r| &*r.name).collect();
        assert_eq!(
            names,
            [
                policy_name("acme", "alice"),
                policy_name("acme", "users"),
                policy_name("acme", "catch-all"),
                policy_name("beta", "b"),
            ],
            "by organization, then in matching order"
        );
        let alice = &rules[0];
        assert_eq!(
            alice.principal.as_deref(),
            Some("organizations/acme/users/alice")
        );
        assert_eq!(alice.method, MethodMatch::Any);
        let limit = alice.limit.expect("a rate");
        assert_eq!(
            (limit.algorithm, limit.limit, limit.burst),
            (LimitAlgorithm::Gcra, 5, 2)
        );
        assert_eq!(limit.period, std::time::Duration::from_secs(1));
        assert!(!alice.fail_closed && !alice.shadow);
        assert_eq!(alice.key_by, RuleKeyBy::Principal);
        let users = &rules[1];
        assert_eq!(
            users.method,
            MethodMatch::Prefix("/tollgate.v1.UserService/".into())
        );
        assert!(users.fail_closed);
        let limit = users.limit.expect("a rate");
        assert_eq!(
            (limit.algorithm, limit.limit, limit.burst),
            (LimitAlgorithm::SlidingWindow, 60, 60)
        );
        let catch_all = &rules[2];
        assert_eq!(catch_all.limit, None);
        let quota = catch_all.quota.expect("a quota");
        assert_eq!(
            (quota.algorithm, quota.limit),
            (LimitAlgorithm::Quota(QuotaWindow::Month), 1000)
        );
        assert_eq!(&*catch_all.org, "acme");
        assert!(!catch_all.uid.is_empty());

        // Every change moves the fingerprint, whatever the clock says.
        let mut seen = vec![replica.fingerprint().await?];
        assert_eq!(seen[0].0, 4);
        let alice = get(&admin, &policy_name("acme", "alice")).await;
        update(
            &admin,
            RateLimitPolicy {
                name: alice.name.clone(),
                display_name: "x".into(),
                ..Default::default()
            },
            &["display_name"],
        )
        .await
        .expect_ok();
        seen.push(replica.fingerprint().await?);
        delete(&admin, &alice.name, "").await.expect_ok();
        seen.push(replica.fingerprint().await?);
        create_rate_limit_policy(&admin, "acme", "again").await;
        seen.push(replica.fingerprint().await?);
        for pair in seen.windows(2) {
            assert_ne!(pair[0], pair[1], "{seen:?}");
        }
        assert_eq!(seen[2].0, 3);
        assert!(seen[3].1 > seen[2].1, "{seen:?}");

        // Concurrent writers never stamp the same time, so none of their
        // commits can hide behind another's.
        let ids: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        for id in &ids {
            create_rate_limit_policy(&admin, "acme", id).await;
        }
        let stamped = concurrently(8, |i| {
            let admin = admin.clone();
            let name = policy_name("acme", &format!("c{i}"));
            async move {
                admin
                    .rate_limit_policies()
                    .update_rate_limit_policy(UpdateRateLimitPolicyRequest {
                        rate_limit_policy: Some(RateLimitPolicy {
                            name,
                            display_name: format!("concurrent {i}"),
                            ..Default::default()
                        }),
                        update_mask: mask(&["display_name"]),
                    })
                    .await
                    .expect_ok()
                    .update_time
            }
        })
        .await;
        let mut times: Vec<i64> = stamped.iter().map(|t| micros(t.as_ref())).collect();
        times.sort_unstable();
        times.dedup();
        assert_eq!(times.len(), 8, "{stamped:?}");
        assert_eq!(replica.fingerprint().await?.1, times.last().copied());

        // This replica's own writes signal at once.
        let mut changes = replica.subscribe_rate_limit_changes();
        let start = *changes.borrow_and_update();
        let before = replica.all_rules().await?.len();
        let ctx = WriteContext::system("test");
        let direct = || NewRateLimitPolicy {
            name: RateLimitPolicyName {
                org: "beta".into(),
                policy: "direct".into(),
            },
            spec: PolicySpec {
                display_name: String::new(),
                selector: Default::default(),
                rate: None,
                quota: Some(rules::Quota {
                    limit: 5,
                    period: QuotaPeriod::Day,
                }),
                algorithm: RateAlgorithm::Gcra,
                shadow: false,
                failure_mode: rules::FailureMode::Open,
                key_by: RuleKeyBy::Organization,
            },
        };
        replica.create_rate_limit_policy(&ctx, direct()).await?;
        assert!(changes.has_changed()?, "a create signals");
        assert_ne!(*changes.borrow_and_update(), start);
        assert_eq!(replica.all_rules().await?.len(), before + 1);
        // A refused write does not.
        let dup = replica.create_rate_limit_policy(&ctx, direct()).await;
        assert!(
            matches!(
                dup,
                Err(tollgate_server::domain::Error::AlreadyExists { .. })
            ),
            "{dup:?}"
        );
        assert!(!changes.has_changed()?, "a failed write does not signal");
        // Deleting an organization takes its policies along: the
        // fingerprint and the rules show it.
        let before = replica.fingerprint().await?;
        admin
            .organizations()
            .delete_organization(DeleteOrganizationRequest {
                name: org_name("beta"),
                force: true,
                ..Default::default()
            })
            .await
            .expect_ok();
        let after = replica.fingerprint().await?;
        assert_eq!(after.0, before.0 - 2, "{before:?} {after:?}");
        assert!(replica.all_rules().await?.iter().all(|r| &*r.org == "acme"));
        Ok(())
    })
    .await;
}
