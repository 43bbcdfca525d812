//! Quickstart: create an organization and a user, then list the users.
//!
//! Start a server (`cargo run --release -p tollgate-server`), copy the
//! `admin api key: tg_…` line it prints on first start, then:
//!
//! ```sh
//! TOLLGATE_API_KEY=tg_... cargo run -p tollgate-client --example quickstart
//! ```
//!
//! `TOLLGATE_URL` defaults to `http://127.0.0.1:8080`. Running it twice is
//! fine: resources that already exist are reused.

use anyhow::Context as _;
use tollgate_client::{
    Client,
    tonic::{Code, Status},
    tonic_types::StatusExt as _,
    v1::{
        CreateOrganizationRequest, CreateUserRequest, GetOrganizationRequest, ListUsersRequest,
        Organization, User,
    },
};

const ORG_ID: &str = "acme";
const USER_ID: &str = "alice";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TOLLGATE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned());
    let api_key = std::env::var("TOLLGATE_API_KEY").context(
        "set TOLLGATE_API_KEY to an admin API key (`admin api key: tg_…` on first start)",
    )?;

    let client = Client::builder(&url)
        .api_key(api_key)
        .user_agent("tollgate-quickstart")
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    println!("connected to {url}");

    // Create the organization; ALREADY_EXISTS means an earlier run did.
    let org_name = format!("organizations/{ORG_ID}");
    let created = client
        .organizations()
        .create_organization(CreateOrganizationRequest {
            organization: Some(Organization {
                display_name: "Acme Corp".to_owned(),
                ..Default::default()
            }),
            organization_id: ORG_ID.to_owned(),
        })
        .await;
    match created {
        Ok(response) => println!("created {}", response.into_inner().name),
        Err(status) if status.code() == Code::AlreadyExists => {
            println!("{org_name} already exists");
        }
        Err(status) => return Err(explain("CreateOrganization", &status)),
    }

    // Get it back. Reads like this one are retried if the server is
    // briefly unavailable.
    let org = client
        .organizations()
        .get_organization(GetOrganizationRequest {
            name: org_name.clone(),
        })
        .await
        .map_err(|status| explain("GetOrganization", &status))?
        .into_inner();
    println!(
        "got {} ({:?}, display name {:?}, uid {})",
        org.name,
        org.state(),
        org.display_name,
        org.uid
    );

    // Create a user in it.
    let created = client
        .users()
        .create_user(CreateUserRequest {
            parent: org_name.clone(),
            user: Some(User {
                display_name: "Alice".to_owned(),
                email: "alice@acme.example".to_owned(),
                roles: vec!["viewer".to_owned()],
                ..Default::default()
            }),
            user_id: USER_ID.to_owned(),
        })
        .await;
    match created {
        Ok(response) => println!("created {}", response.into_inner().name),
        Err(status) if status.code() == Code::AlreadyExists => {
            println!("{org_name}/users/{USER_ID} already exists");
        }
        Err(status) => return Err(explain("CreateUser", &status)),
    }

    // List the organization's users, page by page.
    let mut page_token = String::new();
    println!("users of {org_name}:");
    loop {
        let page = client
            .users()
            .list_users(ListUsersRequest {
                parent: org_name.clone(),
                page_size: 100,
                page_token,
                filter: String::new(),
            })
            .await
            .map_err(|status| explain("ListUsers", &status))?
            .into_inner();
        for user in &page.users {
            println!(
                "  {}  {}  roles={:?}  {:?}",
                user.name,
                user.email,
                user.roles,
                user.state()
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(())
}

/// Turns a failed call into an error that shows the status and any
/// `google.rpc` details the server attached (field violations, error info).
fn explain(method: &str, status: &Status) -> anyhow::Error {
    let mut message = format!("{method} failed: {:?}: {}", status.code(), status.message());
    let details = status.get_error_details();
    if let Some(bad_request) = details.bad_request() {
        for violation in &bad_request.field_violations {
            message.push_str(&format!(
                "\n  {}: {}",
                violation.field, violation.description
            ));
        }
    }
    if let Some(info) = details.error_info() {
        message.push_str(&format!("\n  reason: {} ({})", info.reason, info.domain));
    }
    anyhow::anyhow!(message)
}
