//! The test's side of the sign-in flow: the organization, user and client
//! a flow needs (made through the gRPC API), and a minimal browser over
//! HTTP (reqwest without redirects, a cookie jar, hidden form fields read
//! from the HTML) that plays the user against `/oauth2/authorize`.

use std::{collections::BTreeMap, sync::Mutex};

use openidconnect::reqwest;
use tollgate_e2e::{
    Client, TestServer,
    fixtures::{create_org, create_user, oauth_clients, org_name},
    rpc::RpcResult as _,
    v1::{CreateOAuthClientRequest, OAuthClient, SetPasswordRequest, o_auth_client::ClientType},
};

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery staple";
/// Where the flows send the browser back to (never followed by the HTTP
/// browser).
pub const REDIRECT_URI: &str = "https://app.example/cb";

/// Creates organization `org`, a viewer `user` (`{user}@example.com`)
/// with [`PASSWORD`], and returns the admin client.
pub async fn org_and_user(server: &TestServer, org: &str, user: &str) -> Client {
    let admin = server.admin();
    create_org(&admin, org, &format!("Org {org}")).await;
    create_user(&admin, org, user, &["viewer"]).await;
    set_password(&admin, org, user, PASSWORD).await;
    admin
}

/// Sets a user's password through UserService.SetPassword.
pub async fn set_password(admin: &Client, org: &str, user: &str, password: &str) {
    admin
        .users()
        .set_password(SetPasswordRequest {
            name: format!("{}/users/{user}", org_name(org)),
            password: password.into(),
        })
        .await
        .expect_ok();
}

/// A client of `org` for the code flow (with refresh tokens), redirecting
/// to `redirect_uris`, signing with `alg`; returns it with its secret
/// when confidential.
pub async fn code_client(
    admin: &Client,
    org: &str,
    id: &str,
    public: bool,
    redirect_uris: &[&str],
    alg: &str,
) -> OAuthClient {
    oauth_clients(admin)
        .create_o_auth_client(CreateOAuthClientRequest {
            parent: org_name(org),
            oauth_client_id: id.into(),
            oauth_client: Some(OAuthClient {
                display_name: format!("App <{id}>"),
                client_type: if public {
                    ClientType::Public
                } else {
                    ClientType::Confidential
                } as i32,
                redirect_uris: redirect_uris.iter().map(|s| (*s).to_owned()).collect(),
                grant_types: vec!["authorization_code".into(), "refresh_token".into()],
                scopes: [
                    "openid",
                    "profile",
                    "email",
                    "offline_access",
                    "organizations.get",
                ]
                .map(str::to_owned)
                .to_vec(),
                signing_algorithm: alg.into(),
                ..Default::default()
            }),
        })
        .await
        .expect_ok()
}

/// One HTTP response, read whole.
#[derive(Debug)]
pub struct Page {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body.
    pub body: String,
}

impl Page {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The query parameters of a 303's `Location`.
    pub fn redirect_query(&self) -> BTreeMap<String, String> {
        assert_eq!(self.status, 303, "expected a redirect: {self:?}");
        let location = self.header("location");
        let query = location.split_once('?').map(|(_, q)| q).unwrap_or_default();
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    /// The hidden fields of the page's form.
    pub fn hidden(&self) -> Vec<(String, String)> {
        hidden_fields(&self.body)
    }
}

/// A browser: a cookie jar and no redirects followed.
pub struct Browser {
    http: reqwest::Client,
    authorize: String,
    cookies: Mutex<BTreeMap<String, String>>,
}

impl Browser {
    /// A browser for the server issuing as `issuer`.
    pub fn new(issuer: &str) -> Self {
        Self::build(issuer, None)
    }

    /// A browser whose connections come from `ip`.
    pub fn with_local_address(issuer: &str, ip: std::net::IpAddr) -> Self {
        Self::build(issuer, Some(ip))
    }

    fn build(issuer: &str, ip: Option<std::net::IpAddr>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(ip)
                .build()
                .expect("an HTTP client"),
            authorize: format!("{issuer}/oauth2/authorize"),
            cookies: Mutex::default(),
        }
    }

    /// The cookie `name` the browser holds.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().unwrap().get(name).cloned()
    }

    /// Forgets every cookie.
    pub fn clear_cookies(&self) {
        self.cookies.lock().unwrap().clear();
    }

    /// Sets (or replaces) a cookie by hand.
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.cookies
            .lock()
            .unwrap()
            .insert(name.to_owned(), value.to_owned());
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn read(&self, response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for set in headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let mut jar = self.cookies.lock().unwrap();
            if attributes.contains("Max-Age=0") {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        let body = response.text().await.unwrap();
        Page {
            status,
            headers,
            body,
        }
    }

    /// GETs `url` with the browser's cookies.
    pub async fn get(&self, url: &str) -> Page {
        let response = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.read(response).await
    }

    /// POSTs `fields` to the authorization endpoint as the page's form
    /// would.
    pub async fn post(&self, fields: &[(String, String)]) -> Page {
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (k, v) in fields {
            body.append_pair(k, v);
        }
        let response = self
            .http
            .post(&self.authorize)
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.finish())
            .send()
            .await
            .unwrap();
        self.read(response).await
    }

    /// Submits the sign-in form of `page`.
    pub async fn sign_in(&self, page: &Page, email: &str, password: &str) -> Page {
        assert!(
            page.body.contains("name=\"password\""),
            "not the sign-in page: {page:?}"
        );
        let mut fields = page.hidden();
        fields.push(("email".into(), email.into()));
        fields.push(("password".into(), password.into()));
        self.post(&fields).await
    }

    /// Submits the consent form of `page` with `decision` (`allow` or
    /// `deny`).
    pub async fn decide(&self, page: &Page, decision: &str) -> Page {
        assert!(
            page.body.contains("name=\"decision\""),
            "not the consent page: {page:?}"
        );
        let mut fields = page.hidden();
        fields.push(("decision".into(), decision.into()));
        self.post(&fields).await
    }
}

/// `name="…" value="…"` of every `<input type="hidden">`, unescaped.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for tag in html.split("<input").skip(1) {
        let tag = tag.split('>').next().unwrap_or_default();
        if !tag.contains("type=\"hidden\"") {
            continue;
        }
        let attr = |name: &str| {
            let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
            let end = tag[start..].find('"')? + start;
            Some(unescape(&tag[start..end]))
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            out.push((n, v));
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
