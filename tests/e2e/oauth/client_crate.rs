//! The client crate against the real server: a service gets a token with
//! `ClientCredentials`, calls Tollgate with it, calls a peer of its own
//! that verifies the token offline with `VerifyLayer` (JWKS from
//! discovery), and a token meant for someone else is refused there.

use std::{sync::Arc, time::Duration};

use tollgate_client::{
    ClientAuthMethod, ClientCredentials, OAuthError, TokenError, VerifiedClaims, Verifier,
};
use tollgate_e2e::{
    Code, each_backend,
    fixtures::{create_org, create_sa, org_name, sa_name},
    rpc::RpcResult as _,
    v1::{
        CreateOAuthClientRequest, GetOrganizationRequest, OAuthClient, o_auth_client::ClientType,
    },
};

const PEER: &str = "https://billing.internal";

/// A peer service: axum behind the verifying layer, echoing who called.
async fn peer(verifier: Verifier) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route(
            "/whoami",
            axum::routing::get(
                |axum::Extension(c): axum::Extension<VerifiedClaims>| async move {
                    format!("{} {}", c.sub, c.scope.join(","))
                },
            ),
        )
        .layer(verifier.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn get(url: &str, token: &str) -> anyhow::Result<(u16, String)> {
    let auth = format!("authorization: Bearer {token}");
    let r = tollgate_e2e::curl::request(tollgate_e2e::curl::Version::Http1, url, &["-H", &auth])
        .await?;
    Ok((r.status, r.text()))
}

#[tokio::test]
async fn a_service_gets_tokens_calls_tollgate_and_its_peers_verify_them() {
    each_backend(async |server| {
        let admin = server.admin();
        create_org(&admin, "acme", "Acme").await;
        create_sa(&admin, "acme", "billing", &["viewer"]).await;
        let client = admin
            .oauth_clients()
            .create_o_auth_client(CreateOAuthClientRequest {
                parent: org_name("acme"),
                oauth_client_id: "billing".into(),
                oauth_client: Some(OAuthClient {
                    display_name: "Billing".into(),
                    client_type: ClientType::Confidential as i32,
                    grant_types: vec!["client_credentials".into()],
                    scopes: vec!["organizations.get".into(), "users.*".into()],
                    audiences: vec![PEER.into()],
                    service_account: sa_name("acme", "billing"),
                    ..Default::default()
                }),
            })
            .await
            .expect_ok();
        let issuer = server.grpc_url();

        // Calls to Tollgate with a token from discovery + client_credentials.
        let to_tollgate = Arc::new(
            ClientCredentials::builder(client.name.clone(), client.secret.clone())
                .issuer(issuer.clone())
                .scope("organizations.get")
                .build()?,
        );
        let tollgate = server
            .builder()
            .token_source(to_tollgate.clone())
            .connect_lazy()?;
        for _ in 0..3 {
            tollgate
                .organizations()
                .get_organization(GetOrganizationRequest {
                    name: org_name("acme"),
                })
                .await
                .expect_ok();
        }

        // Calls to a peer: a token for the peer's audience, verified there.
        let verifier = Verifier::builder(issuer.clone(), PEER)
            .jwks_refetch_interval(Duration::from_millis(100))
            .build()?;
        let addr = peer(verifier).await;
        let to_peer = ClientCredentials::builder(client.name.clone(), client.secret.clone())
            .issuer(issuer.clone())
            .audience(PEER)
            .scope("users.get")
            .auth_method(ClientAuthMethod::Post)
            .build()?;
        let token = to_peer.access_token().await?;
        let (status, body) = get(&format!("http://{addr}/whoami"), token.token().secret()).await?;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, format!("{} users.get", sa_name("acme", "billing")));

        // The peer refuses a token meant for Tollgate, and Tollgate one
        // meant for the peer.
        let for_tollgate = to_tollgate.access_token().await?;
        let (status, _) = get(
            &format!("http://{addr}/whoami"),
            for_tollgate.token().secret(),
        )
        .await?;
        assert_eq!(status, 401);
        server
            .builder()
            .bearer_token(token.token().secret())
            .connect_lazy()?
            .organizations()
            .get_organization(GetOrganizationRequest {
                name: org_name("acme"),
            })
            .await
            .expect_code(Code::Unauthenticated);

        // A wrong secret is a clear, final error naming the OAuth code.
        let wrong = ClientCredentials::builder(client.name.clone(), "tgcs_wrong")
            .issuer(issuer)
            .build()?;
        match wrong.access_token().await {
            Err(TokenError::Rejected { error, .. }) => {
                assert_eq!(error, OAuthError::InvalidClient);
            }
            other => panic!("expected invalid_client, got {other:?}"),
        }
        Ok(())
    })
    .await;
}
