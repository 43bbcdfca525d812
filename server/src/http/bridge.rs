//! The in-process gRPC call every HTTP protocol ends in: a gRPC request
//! built from the HTTP one, sent through the same router and layers
//! (trace → authenticate → authorize → service) native gRPC calls pass,
//! and the response read back as messages and a status. Nothing leaves
//! the process and nothing is re-encoded beyond the message bytes.

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt as _;
use http::{
    Extensions, HeaderMap, HeaderValue, Method, Request, Uri, Version, header, uri::PathAndQuery,
};
use tonic::{Code, Status};
use tower::ServiceExt as _;

use super::{
    error::HttpError,
    frames::{self, Frame, Frames},
};

/// The layered gRPC routes, as the HTTP protocols call them.
#[derive(Clone)]
pub struct Grpc {
    router: crate::GrpcService,
    max_message: usize,
    policies: std::sync::Arc<crate::policy::Policies>,
    /// Room for request bodies buffered at once (see [`Grpc::read_body`]).
    budget: BodyBudget,
}

/// KiB of request bodies buffered at once, over every HTTP call.
#[derive(Clone)]
pub struct BodyBudget {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    limit: usize,
}

/// How many of the largest bodies may be buffered at once: the bound on
/// the memory HTTP/JSON and Connect bodies take, whatever the number of
/// streams and connections (256 MiB at the 4 MiB default).
pub const BODY_BUDGET_BODIES: usize = 64;

/// How long a body waits for room in the budget before its call is
/// refused with RESOURCE_EXHAUSTED.
pub const BODY_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl BodyBudget {
    /// Room for [`BODY_BUDGET_BODIES`] bodies of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        let kib = (limit.saturating_mul(BODY_BUDGET_BODIES) / 1024)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        BodyBudget {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(kib)),
            limit,
        }
    }

    /// Reads a whole request body of at most `limit` bytes,
    /// holding room for it in a budget shared by every HTTP call: bodies
    /// are buffered before the layers authenticate them (JSON must be
    /// whole to be transcoded), so a flood of large bodies with a made-up
    /// key must meet a bound of its own. A body that finds no room within
    /// [`BODY_BUDGET_WAIT`] is refused with RESOURCE_EXHAUSTED.
    pub async fn read(&self, mut body: axum::body::Body) -> Result<(Bytes, BodyHold), HttpError> {
        use http_body_util::BodyExt as _;
        let limit = self.limit;
        let mut buf = bytes::BytesMut::new();
        let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
        let mut held_kib = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| HttpError::Body(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() + data.len() > limit {
                // Read on (and drop) up to another `limit` bytes before
                // refusing: an HTTP/2 client still uploading when the
                // answer comes gets its stream reset, and clients such as
                // curl then report a transport error instead of the 413.
                drop(held);
                drop(buf);
                discard(body, limit.saturating_sub(data.len())).await;
                return Err(HttpError::TooLarge { limit });
            }
            let need = (buf.len() + data.len()).div_ceil(1024);
            if need > held_kib {
                let more = u32::try_from(need - held_kib).map_err(|_| HttpError::Busy)?;
                let permit = match self.permits.clone().try_acquire_many_owned(more) {
                    Ok(p) => p,
                    Err(_) => tokio::time::timeout(
                        BODY_BUDGET_WAIT,
                        self.permits.clone().acquire_many_owned(more),
                    )
                    .await
                    .map_err(|_| HttpError::Busy)?
                    .map_err(|_| HttpError::Busy)?,
                };
                match &mut held {
                    Some(h) => h.merge(permit),
                    None => held = Some(permit),
                }
                held_kib = need;
            }
            buf.extend_from_slice(&data);
        }
        Ok((buf.freeze(), BodyHold(held)))
    }
}

/// Reads and drops a body until more than `bound` bytes went by or it
/// ends, keeping none of it: a body refused unread (or over its limit) is
/// drained a bounded amount so an HTTP/2 client still sending it sees the
/// answer rather than a reset stream.
pub async fn discard(mut body: axum::body::Body, bound: usize) {
    use http_body_util::BodyExt as _;
    let mut drained = 0;
    while drained <= bound {
        match body.frame().await {
            Some(Ok(frame)) => drained += frame.data_ref().map_or(0, Bytes::len),
            _ => break,
        }
    }
}

/// Room a buffered body holds in the budget until it is dropped.
#[derive(Debug)]
pub struct BodyHold(#[allow(dead_code)] Option<tokio::sync::OwnedSemaphorePermit>);

/// How much of the body of a call the authenticate layer will refuse
/// (no credentials, a method that needs them) is read before the call is
/// made without it: enough to drain an ordinary request so the client
/// sees the answer, too little to make an anonymous flood cost memory.
pub const ANONYMOUS_BODY_BYTES: usize = 64 * 1024;

/// One call to make.
pub struct Call {
    /// `/package.Service/Method`.
    pub path: PathAndQuery,
    /// The request metadata (already mapped from HTTP headers).
    pub metadata: HeaderMap,
    /// The HTTP request's extensions (peer address and the like).
    pub extensions: Extensions,
    /// The gRPC-framed request body.
    pub body: Body,
}

impl Call {
    /// A call carrying one encoded request message.
    pub fn unary(
        path: PathAndQuery,
        metadata: HeaderMap,
        extensions: Extensions,
        message: &[u8],
    ) -> Self {
        Call {
            path,
            metadata,
            extensions,
            body: Body::from(frames::encode(0, message)),
        }
    }
}

/// A call that ended in an error, with the response headers (and
/// trailers) it carried.
#[derive(Debug)]
pub struct Failure {
    /// Response headers and trailers, merged.
    pub headers: HeaderMap,
    /// The status.
    pub status: Status,
}

/// A successful unary call.
#[derive(Debug)]
pub struct Unary {
    /// Response headers (metadata).
    pub headers: HeaderMap,
    /// The encoded response message.
    pub message: Bytes,
    /// Response trailers.
    pub trailers: HeaderMap,
}

/// A call whose response is being streamed.
pub struct Streaming {
    /// Response headers (metadata).
    pub headers: HeaderMap,
    /// The response frames: messages, then trailers.
    pub frames: Frames,
}

impl Grpc {
    /// Wraps the layered gRPC router; messages over `max_message` bytes are
    /// refused.
    pub fn new(
        router: crate::GrpcService,
        max_message: usize,
        policies: std::sync::Arc<crate::policy::Policies>,
    ) -> Self {
        Grpc {
            router,
            max_message,
            policies,
            budget: BodyBudget::new(max_message),
        }
    }

    /// Reads a whole request body of at most [`Grpc::max_message`] bytes,
    /// holding room for it in the budget every HTTP call shares (see
    /// [`BodyBudget::read`]).
    pub async fn read_body(&self, body: axum::body::Body) -> Result<(Bytes, BodyHold), HttpError> {
        self.budget.read(body).await
    }

    /// Whether a call to `path` with these headers carries no credential
    /// although the method needs one: the authenticate layer will refuse
    /// it whatever its body says, so the HTTP protocols do not decode (or
    /// buffer) the body first. Unauthenticated work is bounded before any
    /// other.
    pub fn refuses_anonymous(&self, path: &str, headers: &HeaderMap) -> bool {
        let public = self.policies.get(path).is_some_and(|p| p.is_public());
        !public
            && !headers.contains_key(header::AUTHORIZATION)
            && !headers.contains_key("x-api-key")
    }

    /// The largest message read or sent.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Starts `call`; the response is ready when the method has answered
    /// with headers (or failed).
    pub async fn start(&self, call: Call) -> Result<Streaming, Failure> {
        let mut request = Request::new(call.body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from(call.path);
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = call.metadata;
        *request.extensions_mut() = call.extensions;
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        let response = match self.router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let body = axum::body::Body::new(body);
        if let Some(status) = Status::from_header_map(&parts.headers) {
            // Trailers-only: the call failed before any message.
            if status.code() != Code::Ok {
                return Err(Failure {
                    headers: parts.headers,
                    status,
                });
            }
        }
        Ok(Streaming {
            headers: parts.headers,
            frames: Frames::new(body, self.max_message),
        })
    }

    /// Makes a unary call (or reads the one response of a streaming one).
    pub async fn unary(&self, call: Call) -> Result<Unary, Failure> {
        let Streaming {
            headers,
            mut frames,
        } = self.start(call).await?;
        let mut message = None;
        let fail = |headers: HeaderMap, e: HttpError| Failure {
            headers,
            status: e.into(),
        };
        while let Some(frame) = frames.next().await {
            match frame {
                Ok(Frame::Message { flags, data }) => {
                    if flags & frames::COMPRESSED != 0 {
                        return Err(fail(
                            headers,
                            HttpError::Render("compressed response".into()),
                        ));
                    }
                    if message.replace(data).is_some() {
                        return Err(fail(
                            headers,
                            HttpError::Render("more than one response message".into()),
                        ));
                    }
                }
                Ok(Frame::Trailers(trailers)) => {
                    let status = Status::from_header_map(&trailers);
                    return match (status, message) {
                        (Some(s), _) if s.code() != Code::Ok => {
                            let mut merged = headers;
                            merged.extend(trailers);
                            Err(Failure {
                                headers: merged,
                                status: s,
                            })
                        }
                        (Some(_), Some(message)) => Ok(Unary {
                            headers,
                            message,
                            trailers,
                        }),
                        _ => Err(fail(
                            headers,
                            HttpError::Render("no response message".into()),
                        )),
                    };
                }
                Err(e) => return Err(fail(headers, HttpError::Render(e.to_string()))),
            }
        }
        Err(fail(
            headers,
            HttpError::Render("the response ended without a status".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffered_bodies_share_a_bounded_budget() {
        // Budget: 64 bodies of 1 KiB = 64 KiB.
        let grpc = BodyBudget::new(1024);
        let mut holds = Vec::new();
        for _ in 0..64 {
            let (bytes, hold) = grpc
                .read(axum::body::Body::from(vec![b'x'; 1024]))
                .await
                .unwrap();
            assert_eq!(bytes.len(), 1024);
            holds.push(hold);
        }
        // Full: the next body waits, then is refused.
        let started = tokio::time::Instant::now();
        let refused = grpc.read(axum::body::Body::from(vec![b'x'; 1024])).await;
        assert!(matches!(refused, Err(HttpError::Busy)), "{refused:?}");
        assert!(started.elapsed() >= BODY_BUDGET_WAIT);
        // Room comes back when a body is dropped.
        holds.pop();
        let (bytes, _hold) = grpc
            .read(axum::body::Body::from(vec![b'x'; 1000]))
            .await
            .unwrap();
        assert_eq!(bytes.len(), 1000);
        // Over the message limit: refused, holding nothing.
        let too_big = grpc.read(axum::body::Body::from(vec![b'x'; 1025])).await;
        assert!(matches!(too_big, Err(HttpError::TooLarge { limit: 1024 })));
    }
}
