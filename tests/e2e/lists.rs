//! List methods end to end: keyset pagination across pages on every List
//! RPC, page tokens bound to their query, page sizes, and AIP-160 filters.

use tollgate_e2e::{
    Client, TestServer, each_backend,
    fixtures::{
        create_key, create_org, create_sa, create_user, mask, org_name, quoted_time, sa_name,
    },
    rpc::RpcResult as _,
    v1::{
        ListApiKeysRequest, ListOrganizationsRequest, ListServiceAccountsRequest, ListUsersRequest,
        Organization, ServiceAccount, UpdateOrganizationRequest, UpdateServiceAccountRequest,
        UpdateUserRequest, User, organization, service_account, user,
    },
};

fn users_req(parent: &str, page_size: i32, page_token: &str, filter: &str) -> ListUsersRequest {
    ListUsersRequest {
        parent: parent.into(),
        page_size,
        page_token: page_token.into(),
        filter: filter.into(),
    }
}

/// Every page of ListUsers for `parent` and `filter`, as (names, token).
async fn user_pages(
    client: &Client,
    parent: &str,
    page_size: i32,
    filter: &str,
) -> Vec<(Vec<String>, String)> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .users()
            .list_users(users_req(parent, page_size, &token, filter))
            .await
            .expect_ok();
        token = page.next_page_token.clone();
        pages.push((
            page.users.into_iter().map(|u| u.name).collect(),
            token.clone(),
        ));
        if token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 100, "pagination does not end");
    }
}

/// The user ids matching `filter` in `parent`, in one page.
async fn user_ids(client: &Client, parent: &str, filter: &str) -> Vec<String> {
    client
        .users()
        .list_users(users_req(parent, 0, "", filter))
        .await
        .expect_ok()
        .users
        .into_iter()
        .map(|u| u.name.rsplit('/').next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_paginate_in_order_without_gaps() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "paged", "Paged").await;
        // Created out of order, listed in id order.
        let mut expected = Vec::new();
        for i in (0..23).rev() {
            let user = create_user(&admin, "paged", &format!("user-{i:02}"), &[]).await;
            expected.push(user.name);
        }
        expected.sort();
        let parent = org_name("paged");

        let pages = user_pages(&admin, &parent, 5, "").await;
        let sizes: Vec<usize> = pages.iter().map(|(names, _)| names.len()).collect();
        assert_eq!(sizes, [5, 5, 5, 5, 3]);
        for (i, (_, token)) in pages.iter().enumerate() {
            assert_eq!(
                token.is_empty(),
                i == pages.len() - 1,
                "only the last page has no token"
            );
        }
        let all: Vec<String> = pages.into_iter().flat_map(|(names, _)| names).collect();
        assert_eq!(all, expected, "every user exactly once, in order");

        // Page size exactly the total: one page and no token (the server
        // must not promise a page that turns out empty).
        let pages = user_pages(&admin, &parent, 23, "").await;
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].0, expected);
        // One less: a second page of one.
        let pages = user_pages(&admin, &parent, 22, "").await;
        assert_eq!(pages.iter().map(|p| p.0.len()).collect::<Vec<_>>(), [22, 1]);
        // 0 means the default (50); sizes above 1000 are coerced, not refused.
        for size in [0, 1000, 5000, i32::MAX] {
            let pages = user_pages(&admin, &parent, size, "").await;
            assert_eq!(pages.len(), 1, "page_size {size}");
            assert_eq!(pages[0].0, expected, "page_size {size}");
        }

        // A token stays valid while rows are added: keyset pagination
        // continues after the last row seen, neither repeating nor skipping.
        let first = admin
            .users()
            .list_users(users_req(&parent, 10, "", ""))
            .await
            .expect_ok();
        create_user(&admin, "paged", "user-00a", &[]).await; // before the cursor
        create_user(&admin, "paged", "user-15a", &[]).await; // after the cursor
        let rest = admin
            .users()
            .list_users(users_req(&parent, 100, &first.next_page_token, ""))
            .await
            .expect_ok();
        let rest: Vec<&str> = rest.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(rest.first().copied(), Some(expected[10].as_str()));
        assert!(
            rest.contains(&"organizations/paged/users/user-15a"),
            "{rest:?}"
        );
        assert!(
            !rest.contains(&"organizations/paged/users/user-00a"),
            "{rest:?}"
        );
        assert_eq!(rest.len(), 14);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_paginates() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();

        // Organizations: root plus six.
        for i in 0..6 {
            create_org(&admin, &format!("org-{i}"), &format!("Org {i}")).await;
        }
        let mut names = Vec::new();
        let mut token = String::new();
        let mut sizes = Vec::new();
        loop {
            let page = admin
                .organizations()
                .list_organizations(ListOrganizationsRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    filter: String::new(),
                })
                .await
                .expect_ok();
            sizes.push(page.organizations.len());
            names.extend(page.organizations.into_iter().map(|o| o.name));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(sizes, [3, 3, 1]);
        let mut expected: Vec<String> = (0..6).map(|i| org_name(&format!("org-{i}"))).collect();
        expected.push(org_name("root"));
        assert_eq!(names, expected);

        // Service accounts: seven in org-0.
        for i in 0..7 {
            create_sa(&admin, "org-0", &format!("sa-{i}"), &[]).await;
        }
        let mut names = Vec::new();
        let mut token = String::new();
        let mut sizes = Vec::new();
        loop {
            let page = admin
                .service_accounts()
                .list_service_accounts(ListServiceAccountsRequest {
                    parent: org_name("org-0"),
                    page_size: 3,
                    page_token: token.clone(),
                    filter: String::new(),
                })
                .await
                .expect_ok();
            sizes.push(page.service_accounts.len());
            names.extend(page.service_accounts.into_iter().map(|s| s.name));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(sizes, [3, 3, 1]);
        let expected: Vec<String> = (0..7)
            .map(|i| sa_name("org-0", &format!("sa-{i}")))
            .collect();
        assert_eq!(names, expected);

        // API keys: six of sa-0 (their ids are random; listed in id order).
        let owner = sa_name("org-0", "sa-0");
        let mut expected = Vec::new();
        for i in 0..6 {
            expected.push(create_key(&admin, &owner, &format!("k{i}")).await.name);
        }
        expected.sort();
        let mut names = Vec::new();
        let mut token = String::new();
        let mut sizes = Vec::new();
        loop {
            let page = admin
                .api_keys()
                .list_api_keys(ListApiKeysRequest {
                    parent: owner.clone(),
                    page_size: 4,
                    page_token: token.clone(),
                    filter: String::new(),
                })
                .await
                .expect_ok();
            sizes.push(page.api_keys.len());
            names.extend(page.api_keys.into_iter().map(|k| k.name));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(sizes, [4, 2]);
        assert_eq!(names, expected);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_are_bound_to_their_query() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let mut users = admin.users();
        create_org(&admin, "alpha", "Alpha").await;
        create_org(&admin, "beta", "Beta").await;
        for i in 0..4 {
            create_user(&admin, "alpha", &format!("a-{i}"), &[]).await;
            create_user(&admin, "beta", &format!("b-{i}"), &[]).await;
        }
        let first = users
            .list_users(users_req("organizations/alpha", 2, "", ""))
            .await
            .expect_ok();
        let token = first.next_page_token.clone();
        assert!(!token.is_empty());

        // The same query continues.
        users
            .list_users(users_req("organizations/alpha", 2, &token, ""))
            .await
            .expect_ok();
        // A different page size is fine (AIP-158 allows changing it).
        users
            .list_users(users_req("organizations/alpha", 3, &token, ""))
            .await
            .expect_ok();
        // Another parent or another filter is refused.
        users
            .list_users(users_req("organizations/beta", 2, &token, ""))
            .await
            .expect_invalid("page_token");
        users
            .list_users(users_req(
                "organizations/alpha",
                2,
                &token,
                "state = ACTIVE",
            ))
            .await
            .expect_invalid("page_token");
        // Made-up tokens are refused.
        let tampered = format!("{}x", &token[..token.len() - 1]);
        for bad in ["not a token", "!!!!", "AAAA", "bm9wZQ", &tampered] {
            if bad == token {
                continue;
            }
            users
                .list_users(users_req("organizations/alpha", 2, bad, ""))
                .await
                .expect_invalid("page_token");
        }
        users
            .list_users(users_req("organizations/alpha", -1, "", ""))
            .await
            .expect_invalid("page_size");

        // Organizations: the token is bound to the filter.
        let orgs = admin
            .organizations()
            .list_organizations(ListOrganizationsRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
            .expect_ok();
        assert!(!orgs.next_page_token.is_empty());
        admin
            .organizations()
            .list_organizations(ListOrganizationsRequest {
                page_size: 1,
                page_token: orgs.next_page_token.clone(),
                filter: "state = ACTIVE".into(),
            })
            .await
            .expect_invalid("page_token");
        admin
            .organizations()
            .list_organizations(ListOrganizationsRequest {
                page_size: 1,
                page_token: "garbage".into(),
                filter: String::new(),
            })
            .await
            .expect_invalid("page_token");

        // Service accounts and keys: bound to the parent.
        for org in ["alpha", "beta"] {
            create_sa(&admin, org, "one", &[]).await;
            create_sa(&admin, org, "two", &[]).await;
        }
        let sas = admin
            .service_accounts()
            .list_service_accounts(ListServiceAccountsRequest {
                parent: org_name("alpha"),
                page_size: 1,
                ..Default::default()
            })
            .await
            .expect_ok();
        admin
            .service_accounts()
            .list_service_accounts(ListServiceAccountsRequest {
                parent: org_name("beta"),
                page_size: 1,
                page_token: sas.next_page_token.clone(),
                filter: String::new(),
            })
            .await
            .expect_invalid("page_token");
        // Same parent, other collection: a service-account token is no
        // user token.
        create_user(&admin, "alpha", "u1", &[]).await;
        create_user(&admin, "alpha", "u2", &[]).await;
        admin
            .users()
            .list_users(ListUsersRequest {
                parent: org_name("alpha"),
                page_size: 1,
                page_token: sas.next_page_token.clone(),
                filter: String::new(),
            })
            .await
            .expect_invalid("page_token");
        for sa in ["one", "two"] {
            for i in 0..2 {
                create_key(&admin, &sa_name("alpha", sa), &format!("k{i}")).await;
            }
        }
        let keys = admin
            .api_keys()
            .list_api_keys(ListApiKeysRequest {
                parent: sa_name("alpha", "one"),
                page_size: 1,
                ..Default::default()
            })
            .await
            .expect_ok();
        admin
            .api_keys()
            .list_api_keys(ListApiKeysRequest {
                parent: sa_name("alpha", "two"),
                page_size: 1,
                page_token: keys.next_page_token.clone(),
                filter: String::new(),
            })
            .await
            .expect_invalid("page_token");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_and_reject() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "filtered", "Filtered").await;
        let parent = org_name("filtered");
        let alice = create_user(&admin, "filtered", "alice", &[]).await;
        let bob = create_user(&admin, "filtered", "bob", &[]).await;
        let carol = create_user(&admin, "filtered", "carol", &[]).await;
        admin
            .users()
            .update_user(UpdateUserRequest {
                user: Some(User {
                    name: bob.name.clone(),
                    state: user::State::Disabled as i32,
                    display_name: "Bob \"The Builder\"".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["state", "display_name"]),
            })
            .await
            .expect_ok();

        let cases: Vec<(String, Vec<&str>)> = vec![
            (String::new(), vec!["alice", "bob", "carol"]),
            ("state = DISABLED".into(), vec!["bob"]),
            ("state = ACTIVE".into(), vec!["alice", "carol"]),
            ("state != ACTIVE".into(), vec!["bob"]),
            ("display_name = \"User alice\"".into(), vec!["alice"]),
            (
                "display_name != \"User alice\"".into(),
                vec!["bob", "carol"],
            ),
            (
                r#"display_name = "Bob \"The Builder\"""#.into(),
                vec!["bob"],
            ),
            ("email = \"BOB@Example.com\"".into(), vec!["bob"]),
            ("email = carol@example.com".into(), vec!["carol"]),
            (
                "state = ACTIVE AND display_name = \"User carol\"".into(),
                vec!["carol"],
            ),
            ("state = ACTIVE AND state = DISABLED".into(), vec![]),
            (
                format!("create_time > {}", quoted_time(alice.create_time.as_ref())),
                vec!["bob", "carol"],
            ),
            (
                format!("create_time >= {}", quoted_time(alice.create_time.as_ref())),
                vec!["alice", "bob", "carol"],
            ),
            (
                format!("create_time < {}", quoted_time(bob.create_time.as_ref())),
                vec!["alice"],
            ),
            (
                format!("create_time <= {}", quoted_time(bob.create_time.as_ref())),
                vec!["alice", "bob"],
            ),
            (
                format!("create_time = {}", quoted_time(carol.create_time.as_ref())),
                vec!["carol"],
            ),
            (
                format!("create_time != {}", quoted_time(carol.create_time.as_ref())),
                vec!["alice", "bob"],
            ),
            (
                "create_time > \"2000-01-01T00:00:00Z\"".into(),
                vec!["alice", "bob", "carol"],
            ),
            ("create_time < \"2000-01-01T00:00:00Z\"".into(), vec![]),
            (
                format!(
                    "state = ACTIVE AND create_time > {}",
                    quoted_time(alice.create_time.as_ref())
                ),
                vec!["carol"],
            ),
        ];
        for (filter, expected) in &cases {
            assert_eq!(
                &user_ids(&admin, &parent, filter).await,
                expected,
                "filter {filter:?}"
            );
        }

        // Filters and pagination together.
        let pages = user_pages(&admin, &parent, 1, "state = ACTIVE").await;
        let names: Vec<&str> = pages
            .iter()
            .flat_map(|(n, _)| n.iter().map(String::as_str))
            .collect();
        assert_eq!(names, [alice.name.as_str(), carol.name.as_str()]);

        for bad in [
            "colour = red",
            "state",
            "state =",
            "state = NOPE",
            "state = SUSPENDED",
            "state > ACTIVE",
            "display_name < \"x\"",
            "display_name = \"unterminated",
            "state = ACTIVE OR state = DISABLED",
            "state = ACTIVE AND",
            "(state = ACTIVE)",
            "create_time > \"yesterday\"",
            "uid = \"x\"",
            "state ! ACTIVE",
        ] {
            admin
                .users()
                .list_users(users_req(&parent, 0, "", bad))
                .await
                .expect_invalid("filter");
        }
        let huge = format!("display_name = \"{}\"", "x".repeat(3000));
        admin
            .users()
            .list_users(users_req(&parent, 0, "", &huge))
            .await
            .expect_invalid("filter");

        // Service accounts: state, display_name, create_time; no email.
        create_sa(&admin, "filtered", "on", &[]).await;
        let off = create_sa(&admin, "filtered", "off", &[]).await;
        admin
            .service_accounts()
            .update_service_account(UpdateServiceAccountRequest {
                service_account: Some(ServiceAccount {
                    name: off.name.clone(),
                    state: service_account::State::Disabled as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["state"]),
            })
            .await
            .expect_ok();
        let sas = |filter: &str| ListServiceAccountsRequest {
            parent: parent.clone(),
            filter: filter.into(),
            ..Default::default()
        };
        let disabled = admin
            .service_accounts()
            .list_service_accounts(sas("state = DISABLED"))
            .await
            .expect_ok();
        assert_eq!(
            disabled
                .service_accounts
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            [off.name.as_str()]
        );
        let named = admin
            .service_accounts()
            .list_service_accounts(sas("display_name = \"Service account on\""))
            .await
            .expect_ok();
        assert_eq!(named.service_accounts.len(), 1);
        assert_eq!(named.service_accounts[0].name, sa_name("filtered", "on"));
        admin
            .service_accounts()
            .list_service_accounts(sas("email = \"x@example.com\""))
            .await
            .expect_invalid("filter");

        // Organizations.
        admin
            .organizations()
            .update_organization(UpdateOrganizationRequest {
                organization: Some(Organization {
                    name: parent.clone(),
                    state: organization::State::Suspended as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["state"]),
            })
            .await
            .expect_ok();
        let orgs = |filter: &str| ListOrganizationsRequest {
            filter: filter.into(),
            ..Default::default()
        };
        let suspended = admin
            .organizations()
            .list_organizations(orgs("state = SUSPENDED"))
            .await
            .expect_ok();
        assert_eq!(
            suspended
                .organizations
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>(),
            [parent.as_str()]
        );
        let rooted = admin
            .organizations()
            .list_organizations(orgs("display_name = \"Root\" AND state = ACTIVE"))
            .await
            .expect_ok();
        assert_eq!(
            rooted
                .organizations
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>(),
            ["organizations/root"]
        );
        admin
            .organizations()
            .list_organizations(orgs("state = DISABLED"))
            .await
            .expect_invalid("filter");

        // API keys.
        let owner = sa_name("filtered", "on");
        for name in ["k1", "k2", "k3"] {
            create_key(&admin, &owner, name).await;
        }
        let keys = admin
            .api_keys()
            .list_api_keys(ListApiKeysRequest {
                parent: owner.clone(),
                filter: "display_name = \"k2\" AND state = ACTIVE".into(),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert_eq!(keys.api_keys.len(), 1);
        assert_eq!(keys.api_keys[0].display_name, "k2");
        Ok(())
    })
    .await;
}
