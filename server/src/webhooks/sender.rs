//! Sends one delivery: a signed POST, its answer sorted into delivered,
//! worth retrying, or refused for good.
//!
//! Every address a delivery connects to is checked against the
//! configured [`Targets`] *after* resolution, by the client's own
//! resolver, so a name that resolves to an internal address (or is
//! rebound to one between checks) is refused; an IP-literal host, which
//! no resolver sees, is checked before the request. Redirects are not
//! followed (they would lead past the check) and no proxy is used.

use std::{
    error::Error as StdError,
    fmt,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT},
};

use opentelemetry::{KeyValue, trace::SpanKind};

use super::signature::{self, Secret};
use crate::{domain::webhook::Targets, otel};

/// The longest `Retry-After` honoured; a longer one waits this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The most of a response body read (then dropped), so the connection
/// can be reused without letting an endpoint stream at us for ever.
const MAX_BODY: usize = 64 * 1024;

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered {
        /// The status.
        code: u16,
    },
    /// A network error, a timeout, a 5xx, 408 or 429: worth trying again,
    /// at `retry_after` when the endpoint said so.
    Retry {
        /// The status; 0 for none.
        code: u16,
        /// Why.
        error: String,
        /// The endpoint's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Any other status, or an address the configuration refuses:
    /// retrying would get the same answer.
    Refused {
        /// The status.
        code: u16,
        /// Why.
        error: String,
    },
}

/// An attempt's outcome and duration.
#[derive(Debug, Clone)]
pub struct Sent {
    /// What happened.
    pub outcome: Outcome,
    /// From the start of the request to the response's head (or failure).
    pub latency: Duration,
}

/// An address refused by [`Targets`], as the resolver reports it.
#[derive(Debug)]
struct AddressRefused(String);

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for AddressRefused {}

/// Resolves with the system resolver, then keeps only the addresses
/// [`Targets`] permits; none left is an error naming why.
struct GuardedResolver {
    targets: Arc<Targets>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let targets = self.targets.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| match targets.check(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| "no address".to_owned());
                return Err(Box::new(AddressRefused(format!("{host}: {why}")))
                    as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client of deliveries.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    targets: Arc<Targets>,
}

impl Sender {
    /// A sender that waits at most `timeout` per attempt and connects only
    /// where `targets` permits.
    pub fn new(targets: Targets, timeout: Duration) -> anyhow::Result<Self> {
        let targets = Arc::new(targets);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                targets: targets.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .http1_only()
            .build()?;
        Ok(Self { client, targets })
    }

    /// POSTs `body` to `url` as message `id`, signed with each of
    /// `secrets`. `trace_parent` is the change the message tells of: the
    /// request's client span links to it, and the request carries its own
    /// span as `traceparent`.
    pub async fn send(
        &self,
        url: &str,
        id: &str,
        body: &str,
        secrets: &[Secret],
        trace_parent: &str,
    ) -> Sent {
        let span = otel::child::Span::child_or_root(
            "POST",
            SpanKind::Client,
            otel::propagation::span_context(trace_parent)
                .into_iter()
                .collect(),
            || {
                let mut a = vec![
                    KeyValue::new("http.request.method", "POST"),
                    KeyValue::new("tollgate.webhook.message_id", id.to_owned()),
                ];
                // The host only: a URL's path or query may carry a token.
                if let Ok(u) = Url::parse(url) {
                    a.push(KeyValue::new("url.scheme", u.scheme().to_owned()));
                    if let Some(host) = u.host_str() {
                        a.push(KeyValue::new("server.address", host.to_owned()));
                    }
                }
                a
            },
        );
        let sent = self.send_in(url, id, body, secrets, span.context()).await;
        match &sent.outcome {
            Outcome::Delivered { code } => {
                span.set(KeyValue::new("http.response.status_code", i64::from(*code)));
            }
            Outcome::Retry { code, error, .. } | Outcome::Refused { code, error } => {
                if *code != 0 {
                    span.set(KeyValue::new("http.response.status_code", i64::from(*code)));
                }
                span.fail(error.clone());
            }
        }
        sent
    }

    async fn send_in(
        &self,
        url: &str,
        id: &str,
        body: &str,
        secrets: &[Secret],
        trace: Option<&opentelemetry::Context>,
    ) -> Sent {
        let started = Instant::now();
        let retry = |error: String| Outcome::Retry {
            code: 0,
            error,
            retry_after: None,
        };
        let parsed = match Url::parse(url) {
            Ok(u) => u,
            Err(e) => {
                return Sent {
                    outcome: Outcome::Refused {
                        code: 0,
                        error: format!("bad URL: {e}"),
                    },
                    latency: started.elapsed(),
                };
            }
        };
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && let Err(why) = self.targets.check(ip)
        {
            return Sent {
                outcome: Outcome::Refused {
                    code: 0,
                    error: format!("address refused: {why}"),
                },
                latency: started.elapsed(),
            };
        }
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        let mut request = self
            .client
            .post(parsed)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("Tollgate-Webhooks/", env!("CARGO_PKG_VERSION"))),
            );
        for (name, value) in signature::headers(secrets, id, timestamp, body.as_bytes()) {
            request = request.header(name, value);
        }
        // The delivery's span, or the current (unsampled) trace so the
        // receiver does not sample what we did not.
        let mut context = http::HeaderMap::new();
        match trace {
            Some(cx) => otel::propagation::inject(cx, &mut context),
            None if otel::enabled() => opentelemetry::Context::map_current(|cx| {
                otel::propagation::inject(cx, &mut context);
            }),
            None => {}
        }
        for (name, value) in context {
            if let Some(name) = name {
                request = request.header(name, value);
            }
        }
        let response = match request.body(body.to_owned()).send().await {
            Ok(r) => r,
            Err(e) => {
                let outcome = match refused_address(&e) {
                    Some(why) => Outcome::Refused {
                        code: 0,
                        error: format!("address refused: {why}"),
                    },
                    None => retry(describe(&e)),
                };
                return Sent {
                    outcome,
                    latency: started.elapsed(),
                };
            }
        };
        let latency = started.elapsed();
        let status = response.status();
        let code = status.as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
            .map(|d| d.min(MAX_RETRY_AFTER));
        drain(response).await;
        let outcome = if status.is_success() {
            Outcome::Delivered { code }
        } else if code == 429 || code == 408 || status.is_server_error() {
            Outcome::Retry {
                code,
                error: format!("HTTP {code}"),
                retry_after,
            }
        } else {
            Outcome::Refused {
                code,
                error: format!("HTTP {code}: not retried"),
            }
        };
        Sent { outcome, latency }
    }
}

/// Reads (and drops) at most [`MAX_BODY`] of a response, so a short
/// answer leaves its connection reusable.
async fn drain(mut response: reqwest::Response) {
    let mut read = 0;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read > MAX_BODY {
            break;
        }
    }
}

/// Why the resolver refused every address, when that is what failed.
fn refused_address(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<AddressRefused>() {
            return Some(refused.to_string());
        }
        source = s.source();
    }
    None
}

/// A request error as a short reason: a timeout, a connection failure, or
/// what the error says.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        let mut why = String::from("connection failed");
        let mut source = e.source();
        while let Some(s) = source {
            why = format!("connection failed: {s}");
            source = s.source();
        }
        why
    } else {
        let mut why = e.to_string();
        if let Some(s) = e.source() {
            why = format!("{why}: {s}");
        }
        why
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let later = SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
