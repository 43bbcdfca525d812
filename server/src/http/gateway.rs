//! HTTP/JSON transcoding as grpc-gateway serves it: a request matched
//! against the compiled `google.api.http` bindings becomes a gRPC request
//! message, the call goes through [`Grpc`], and the response (or the
//! status) comes back as canonical JSON. Server-streaming methods answer
//! with newline-delimited JSON (`{"result": …}` lines, then `{"error": …}`
//! if the call fails), or over a WebSocket when the client asks for an
//! upgrade.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{
        FromRequestParts as _,
        ws::{Message as WsMessage, WebSocket, WebSocketUpgrade},
    },
};
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header, request::Parts};
use tonic::{Code, Status};

use super::{
    bridge::{Call, Grpc},
    connect::drain,
    error::{HttpError, gateway_error},
    frames::Frame,
    headers::{REQUEST_ID, gateway_metadata, gateway_response_headers},
    routes::{BodyRule, Lookup, Route},
    transcode::{TranscodeError, Transcoder},
};
use crate::layers::request_id::RequestId;

/// The HTTP/JSON gateway.
#[derive(Clone)]
pub struct Gateway {
    transcoder: Arc<Transcoder>,
    grpc: Grpc,
}

impl From<TranscodeError> for HttpError {
    fn from(e: TranscodeError) -> Self {
        if e.is_internal() {
            return HttpError::Render(e.to_string());
        }
        HttpError::Field {
            field: e.field().unwrap_or_default().to_owned(),
            description: e.description().to_owned(),
        }
    }
}

/// Whether a content type is JSON (`application/json`, `…+json`, any
/// parameters).
fn is_json(headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let media = v
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/json"
        || (media.starts_with("application/") && media.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(HttpError::UnsupportedMediaType {
            got: media,
            expected: "application/json",
        })
    }
}

impl Gateway {
    /// A gateway over `transcoder`'s routes calling `grpc`.
    pub fn new(transcoder: Arc<Transcoder>, grpc: Grpc) -> Self {
        Gateway { transcoder, grpc }
    }

    /// Serves one HTTP request.
    pub async fn serve(&self, request: Request<Body>) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        // Made once, shared by the call's metadata and the response.
        let request_id = match RequestId::from_headers(&parts.headers) {
            RequestId::Presented(v) => Some(v),
            assigned => HeaderValue::from_str(&assigned.to_string()).ok(),
        };
        let mut body = Some(body);
        let mut response = match self.handle(&mut parts, &mut body, &request_id).await {
            Ok(r) => r,
            Err(e) => e.into_gateway_response(),
        };
        if let Some(unread) = body {
            // Refused before the body was read (no route, wrong method or
            // content type): drain a little of it, or an HTTP/2 client
            // still sending sees its stream reset instead of the answer.
            drain(unread).await;
        }
        if let Some(v) = request_id {
            response.headers_mut().insert(REQUEST_ID, v);
        }
        response
    }

    async fn handle(
        &self,
        parts: &mut Parts,
        body: &mut Option<Body>,
        request_id: &Option<HeaderValue>,
    ) -> Result<Response<Body>, HttpError> {
        let (route, captures) = match self.transcoder.find(&parts.method, parts.uri.path()) {
            Lookup::Found(route, captures) => (route.clone(), captures),
            Lookup::MethodNotAllowed(allow) => {
                return Err(HttpError::MethodNotAllowed {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_owned(),
                    allow,
                });
            }
            Lookup::NotFound => {
                return Err(HttpError::NotFound {
                    path: parts.uri.path().to_owned(),
                });
            }
        };
        let mut metadata = gateway_metadata(&parts.headers)?;
        if let Some(v) = request_id {
            metadata.insert(REQUEST_ID, v.clone());
        }
        // Room the body holds in the buffering budget until the call ends.
        let mut _hold = None;
        let message = if self
            .grpc
            .refuses_anonymous(route.grpc_path.path(), &parts.headers)
        {
            // Refused in the layers, as over gRPC; the body is only drained.
            if let Some(body) = body.take() {
                drain(body).await;
            }
            Bytes::new()
        } else {
            let body = if matches!(route.body, BodyRule::None) {
                Bytes::new()
            } else {
                is_json(&parts.headers)?;
                match body.take() {
                    Some(body) => {
                        let (bytes, hold) = self.grpc.read_body(body).await?;
                        _hold = Some(hold);
                        bytes
                    }
                    None => Bytes::new(),
                }
            };
            self.transcoder
                .request(&route, &captures, parts.uri.query(), &body)?
        };
        if route.server_streaming() {
            if parts.headers.contains_key(header::UPGRADE) {
                let upgrade = WebSocketUpgrade::from_request_parts(parts, &())
                    .await
                    .map_err(|e| HttpError::Header {
                        header: "upgrade",
                        description: e.body_text(),
                    })?
                    .max_message_size(WS_MAX_CLIENT_MESSAGE)
                    .max_frame_size(WS_MAX_CLIENT_MESSAGE);
                let call = Call::unary(
                    route.grpc_path.clone(),
                    metadata,
                    std::mem::take(&mut parts.extensions),
                    &message,
                );
                let gateway = self.clone();
                return Ok(upgrade.on_upgrade(move |socket| gateway.websocket(route, call, socket)));
            }
            let call = Call::unary(
                route.grpc_path.clone(),
                metadata,
                std::mem::take(&mut parts.extensions),
                &message,
            );
            return Ok(self.ndjson(route, call).await);
        }
        let call = Call::unary(
            route.grpc_path.clone(),
            metadata,
            std::mem::take(&mut parts.extensions),
            &message,
        );
        Ok(match self.grpc.unary(call).await {
            Ok(unary) => {
                let json = self.transcoder.response(&route, &unary.message)?;
                let mut response = Response::new(Body::from(json));
                *response.headers_mut() =
                    gateway_response_headers(&unary.headers, Some(&unary.trailers));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(failure) => {
                let mut response = gateway_error(&failure.status, None);
                response
                    .headers_mut()
                    .extend(gateway_response_headers(&failure.headers, None));
                response
            }
        })
    }

    /// A server stream as newline-delimited JSON.
    async fn ndjson(&self, route: Arc<Route>, call: Call) -> Response<Body> {
        let streaming = match self.grpc.start(call).await {
            Ok(s) => s,
            Err(failure) => {
                let mut response = gateway_error(&failure.status, None);
                response
                    .headers_mut()
                    .extend(gateway_response_headers(&failure.headers, None));
                return response;
            }
        };
        let transcoder = self.transcoder.clone();
        let lines = streaming.frames.filter_map(move |frame| {
            let line = match frame {
                Ok(Frame::Message { data, .. }) => Some(
                    transcoder
                        .stream_result(&route, &data)
                        .map(Bytes::from)
                        .unwrap_or_else(|e| {
                            error_line(&transcoder, &Status::from(HttpError::from(e)))
                        }),
                ),
                Ok(Frame::Trailers(trailers)) => match Status::from_header_map(&trailers) {
                    Some(s) if s.code() != Code::Ok => Some(error_line(&transcoder, &s)),
                    _ => None,
                },
                Err(e) => Some(error_line(
                    &transcoder,
                    &Status::from(HttpError::Render(e.to_string())),
                )),
            };
            std::future::ready(line.map(Ok::<_, std::io::Error>))
        });
        let mut response = Response::new(Body::from_stream(lines));
        *response.headers_mut() = gateway_response_headers(&streaming.headers, None);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        *response.status_mut() = StatusCode::OK;
        response
    }

    /// A server stream over a WebSocket: one text message per response
    /// (`{"result": …}`), `{"error": …}` if the call fails, then a close.
    ///
    /// After the upgrade the listener no longer tracks the connection, so
    /// the socket bounds itself: a ping every [`WS_PING_EVERY`], and a
    /// peer silent (no pong, no frame) for [`WS_DEAD_AFTER`] is dropped
    /// along with its call. Messages from the client are read (pongs,
    /// close) and otherwise ignored, at most [`WS_MAX_CLIENT_MESSAGE`]
    /// bytes each.
    async fn websocket(self, route: Arc<Route>, call: Call, socket: WebSocket) {
        let (mut tx, mut rx) = socket.split();
        let mut frames = match self.grpc.start(call).await {
            Ok(s) => s.frames,
            Err(failure) => {
                let _ = tx
                    .send(text(error_line(&self.transcoder, &failure.status)))
                    .await;
                let _ = tx.send(WsMessage::Close(None)).await;
                return;
            }
        };
        let mut ping = tokio::time::interval(WS_PING_EVERY);
        ping.reset();
        let mut last_seen = tokio::time::Instant::now();
        loop {
            tokio::select! {
                frame = frames.next() => {
                    let line = match frame {
                        Some(Ok(Frame::Message { data, .. })) => self
                            .transcoder
                            .stream_result(&route, &data)
                            .map(Bytes::from)
                            .unwrap_or_else(|e| {
                                error_line(&self.transcoder, &Status::from(HttpError::from(e)))
                            }),
                        Some(Ok(Frame::Trailers(trailers))) => match Status::from_header_map(&trailers) {
                            Some(s) if s.code() != Code::Ok => error_line(&self.transcoder, &s),
                            _ => break,
                        },
                        Some(Err(e)) => error_line(
                            &self.transcoder,
                            &Status::from(HttpError::Render(e.to_string())),
                        ),
                        None => break,
                    };
                    if tx.send(text(line)).await.is_err() {
                        return;
                    }
                }
                message = rx.next() => match message {
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => last_seen = tokio::time::Instant::now(),
                },
                _ = ping.tick() => {
                    if last_seen.elapsed() > WS_DEAD_AFTER
                        || tx.send(WsMessage::Ping(Bytes::new())).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(WsMessage::Close(None)).await;
    }
}

/// How often an idle WebSocket is pinged.
pub const WS_PING_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a WebSocket peer may stay silent (no pong) before it is
/// dropped.
pub const WS_DEAD_AFTER: std::time::Duration = std::time::Duration::from_secs(75);
/// The largest message a WebSocket client may send (it has nothing to
/// say beyond pongs and a close).
pub const WS_MAX_CLIENT_MESSAGE: usize = 64 * 1024;

fn text(line: Bytes) -> WsMessage {
    let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
    WsMessage::Text(String::from_utf8_lossy(trimmed).into_owned().into())
}

/// `{"error": <status>}\n`, grpc-gateway's last line of a failed stream.
fn error_line(transcoder: &Transcoder, status: &Status) -> Bytes {
    Bytes::from(transcoder.stream_error(status))
}
