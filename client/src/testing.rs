//! A fake issuer for the token source and verify tests: token endpoint,
//! discovery and JWKS on `127.0.0.1:0`, counting every request and
//! answering from a script.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// A canned answer of the token endpoint.
pub(crate) struct Scripted {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Scripted {
    pub(crate) fn status(status: u16) -> Self {
        Self {
            status,
            body: String::new(),
            headers: Vec::new(),
        }
    }

    pub(crate) fn oauth_error(status: u16, error: &str, description: &str) -> Self {
        Self {
            status,
            body: serde_json::json!({ "error": error, "error_description": description })
                .to_string(),
            headers: vec![("content-type", "application/json".to_owned())],
        }
    }
}

/// What the token endpoint saw of one request.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) authorization: Option<String>,
    pub(crate) form: Vec<(String, String)>,
}

type Signer = Box<dyn Fn(u64) -> String + Send + Sync>;

#[derive(Default)]
pub(crate) struct IssuerState {
    pub(crate) url: Mutex<String>,
    pub(crate) token_requests: AtomicUsize,
    pub(crate) discovery_requests: AtomicUsize,
    pub(crate) jwks_requests: AtomicUsize,
    pub(crate) script: Mutex<VecDeque<Scripted>>,
    pub(crate) seen: Mutex<Vec<Seen>>,
    /// `expires_in` of issued tokens; 3600 when 0.
    pub(crate) expires_in: AtomicU64,
    /// How long the token endpoint takes to answer, in milliseconds.
    pub(crate) delay_ms: AtomicU64,
    /// Makes the access token from the request number; `token-<n>` if unset.
    pub(crate) signer: Mutex<Option<Signer>>,
    pub(crate) jwks: Mutex<serde_json::Value>,
    pub(crate) jwks_cache_control: Mutex<Option<String>>,
}

pub(crate) struct Issuer {
    pub(crate) url: String,
    pub(crate) state: Arc<IssuerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Issuer {
    pub(crate) async fn start() -> Self {
        let state = Arc::new(IssuerState {
            jwks: Mutex::new(serde_json::json!({ "keys": [] })),
            ..Default::default()
        });
        let app = Router::new()
            .route("/oauth2/token", post(token))
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        *state.url.lock().unwrap() = url.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, state, task }
    }

    pub(crate) fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.url)
    }

    pub(crate) fn push(&self, scripted: Scripted) {
        self.state.script.lock().unwrap().push_back(scripted);
    }

    pub(crate) fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    #[cfg_attr(
        not(feature = "verify"),
        expect(dead_code, reason = "used by the verify tests")
    )]
    pub(crate) fn jwks_requests(&self) -> usize {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn token(State(state): State<Arc<IssuerState>>, headers: HeaderMap, body: Bytes) -> Response {
    let n = state.token_requests.fetch_add(1, Ordering::SeqCst) as u64 + 1;
    state.seen.lock().unwrap().push(Seen {
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
        form: form_urlencoded::parse(&body).into_owned().collect(),
    });
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let scripted = state.script.lock().unwrap().pop_front();
    if let Some(scripted) = scripted {
        let mut response = http::Response::builder().status(scripted.status);
        for (name, value) in scripted.headers {
            response = response.header(name, value);
        }
        return response.body(scripted.body.into()).unwrap();
    }
    let access_token = match &*state.signer.lock().unwrap() {
        Some(sign) => sign(n),
        None => format!("token-{n}"),
    };
    let expires_in = match state.expires_in.load(Ordering::SeqCst) {
        0 => 3600,
        n => n,
    };
    let body = serde_json::json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": "organizations.read",
    });
    json(StatusCode::OK, body, None)
}

async fn discovery(State(state): State<Arc<IssuerState>>) -> Response {
    state.discovery_requests.fetch_add(1, Ordering::SeqCst);
    let url = state.url.lock().unwrap().clone();
    let body = serde_json::json!({
        "issuer": url,
        "token_endpoint": format!("{url}/oauth2/token"),
        "jwks_uri": format!("{url}/jwks"),
    });
    json(StatusCode::OK, body, None)
}

async fn jwks(State(state): State<Arc<IssuerState>>) -> Response {
    state.jwks_requests.fetch_add(1, Ordering::SeqCst);
    let body = state.jwks.lock().unwrap().clone();
    let cache_control = state.jwks_cache_control.lock().unwrap().clone();
    json(StatusCode::OK, body, cache_control)
}

fn json(status: StatusCode, body: serde_json::Value, cache_control: Option<String>) -> Response {
    let mut response = (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(value) = cache_control {
        response
            .headers_mut()
            .insert("cache-control", value.parse().unwrap());
    }
    response
}
