//! The sign-in page in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, via `fantoccini`) types the email and
//! password, clicks Sign in and Allow, and lands on the client's redirect
//! URI (a listener of the test's own) with a code that the token endpoint
//! then accepts.

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use fantoccini::{ClientBuilder, Locator};
use openidconnect::reqwest;
use std::process::{Child, Command};

use tokio::{net::TcpListener, sync::Notify};

use super::web::{PASSWORD, code_client, org_and_user};

/// The PKCE pair of RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(path: &std::path::Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{url}/status")).send().await
                && r.status().is_success()
            {
                return Driver { child, url };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromedriver did not answer on {url}/status within 10 s");
    }
}

/// The client's redirect URI: records the query of every request.
struct Callback {
    url: String,
    seen: Arc<Mutex<Option<BTreeMap<String, String>>>>,
    notify: Arc<Notify>,
}

impl Callback {
    async fn start() -> Callback {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/cb", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Option<BTreeMap<String, String>>>> = Arc::default();
        let notify = Arc::new(Notify::new());
        let (s, n) = (seen.clone(), notify.clone());
        let app = axum::Router::new().route(
            "/cb",
            axum::routing::get(move |uri: http::Uri| async move {
                let query = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                    .into_owned()
                    .collect();
                *s.lock().unwrap() = Some(query);
                n.notify_one();
                "signed in; you may close this window"
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Callback { url, seen, notify }
    }

    async fn wait(&self) -> Option<BTreeMap<String, String>> {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(q) = self.seen.lock().unwrap().clone() {
                    return q;
                }
                self.notify.notified().await;
            }
        })
        .await
        .ok()
    }
}

#[tokio::test]
async fn sign_in_and_consent_in_headless_chromium() {
    let Some((chromium, chromedriver)) = tollgate_e2e::peers::chromium() else {
        return;
    };
    let driver = Driver::start(&chromedriver).await;
    tollgate_e2e::each_backend(async |server| {
        let issuer = server.grpc_url();
        let admin = org_and_user(server, "acme", "ed").await;
        let callback = Callback::start().await;
        let client = code_client(&admin, "acme", "web", true, &[&callback.url], "EdDSA").await;
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("client_id", &client.name)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &callback.url)
            .append_pair("scope", "openid email organizations.get")
            .append_pair("state", "browser-state")
            .append_pair("nonce", "browser-nonce")
            .append_pair("code_challenge", CHALLENGE)
            .append_pair("code_challenge_method", "S256");
        let authorize = format!("{issuer}/oauth2/authorize?{}", q.finish());

        let profile = tempfile::tempdir()?;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await?;
        let outcome = async {
            browser.goto(&authorize).await?;
            let title = browser.title().await?;
            anyhow::ensure!(title == "Sign in", "the sign-in page, got '{title}'");
            browser
                .find(Locator::Id("email"))
                .await?
                .send_keys("ed@example.com")
                .await?;
            browser
                .find(Locator::Id("password"))
                .await?
                .send_keys(PASSWORD)
                .await?;
            browser.find(Locator::Id("sign-in")).await?.click().await?;
            let allow = browser
                .wait()
                .at_most(Duration::from_secs(20))
                .for_element(Locator::Id("allow"))
                .await?;
            let scopes = browser.find(Locator::Id("scopes")).await?.text().await?;
            anyhow::ensure!(scopes.contains("organizations.get"), "{scopes}");
            allow.click().await?;
            let Some(query) = callback.wait().await else {
                anyhow::bail!(
                    "the browser did not reach the redirect URI; it is on {} showing {}",
                    browser.current_url().await?,
                    browser.source().await?
                );
            };
            anyhow::ensure!(query.contains_key("code"), "{query:?}");
            anyhow::ensure!(query.get("state").map(String::as_str) == Some("browser-state"));
            anyhow::ensure!(query.get("iss") == Some(&issuer), "{query:?}");
            let landed = browser.current_url().await?;
            anyhow::ensure!(
                landed.as_str().starts_with(&callback.url),
                "the browser is on {landed}"
            );
            Ok::<_, anyhow::Error>(query["code"].clone())
        }
        .await;
        browser.close().await?;
        let code = outcome?;

        // The code the browser brought back is good at the token endpoint.
        let tokens = reqwest::Client::new()
            .post(format!("{issuer}/oauth2/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", client.name.as_str()),
                ("code", code.as_str()),
                ("redirect_uri", callback.url.as_str()),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await?
            .text()
            .await?;
        let tokens: serde_json::Value = serde_json::from_str(&tokens)?;
        anyhow::ensure!(tokens["access_token"].is_string(), "{tokens}");
        anyhow::ensure!(tokens["id_token"].is_string(), "{tokens}");
        Ok(())
    })
    .await;
}
