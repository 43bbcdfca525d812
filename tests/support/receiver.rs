//! A real HTTP endpoint for webhook tests: an axum server on loopback that
//! answers each POST as told (a status, a `Retry-After`, a dropped
//! connection, a hang) and records what it received.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use tokio_util::sync::CancellationToken;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status, with `Retry-After` when given.
    Status(u16, Option<String>),
    /// Close the connection without answering.
    Drop,
    /// Never answer (until the client gives up).
    Hang,
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: String,
    /// What the receiver answered.
    pub answer: String,
}

impl Received {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    /// The event id the delivery carries (`data.id`).
    pub fn event_id(&self) -> u64 {
        self.json()["data"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("data.id")
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Answer>,
    received: Vec<Received>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = inner
        .lock()
        .unwrap()
        .script
        .pop_front()
        .unwrap_or(Answer::Status(200, None));
    let record = |what: String| {
        inner.lock().unwrap().received.push(Received {
            at: Instant::now(),
            headers: headers.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            answer: what,
        });
    };
    match answer {
        Answer::Status(code, retry_after) => {
            record(code.to_string());
            let status = StatusCode::from_u16(code).expect("a status");
            match retry_after {
                Some(r) => (status, [("retry-after", r)], "").into_response(),
                None => (status, "").into_response(),
            }
        }
        Answer::Drop => {
            record("dropped".into());
            // Panicking in the handler makes hyper close the connection
            // without a response, as a crashing endpoint would.
            std::panic::resume_unwind(Box::new("dropped on purpose"))
        }
        Answer::Hang => {
            record("hang".into());
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

impl Receiver {
    /// Starts a receiver on `127.0.0.1:0`; every request gets 200 unless
    /// [`Receiver::script`] says otherwise.
    pub async fn start() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
        Receiver { addr, inner, stop }
    }

    /// The URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers the next requests with `answers`, in order (then 200).
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Waits until `n` requests arrived (at most `within`); returns them.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} requests, not {n}, within {within:?}: {:?}",
                got.len(),
                got.iter()
                    .map(|r| (&r.answer, r.event_id()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
