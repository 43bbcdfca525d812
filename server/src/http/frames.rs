//! Length-prefixed messages: the framing gRPC, gRPC-Web and Connect
//! streaming share (one flag byte, a four-byte big-endian length, the
//! message). Read incrementally from a body, bounded by a size limit.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use futures::Stream;
use http::HeaderMap;
use http_body::Body as _;

/// The flag bit of a compressed message.
pub const COMPRESSED: u8 = 0x01;
/// Connect's flag bit of the end-of-stream message.
pub const END_STREAM: u8 = 0x02;

/// What a framed body yields.
#[derive(Debug)]
pub enum Frame {
    /// One message, with its flag byte.
    Message {
        /// The flag byte.
        flags: u8,
        /// The message bytes.
        data: Bytes,
    },
    /// The body's trailers (gRPC's status).
    Trailers(HeaderMap),
}

/// Why a framed body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A message longer than the limit.
    #[error("a message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The body ended inside a message.
    #[error("the body ended inside a message")]
    Truncated,
    /// The body failed.
    #[error("reading the body: {0}")]
    Body(String),
}

/// Prefixes `message` with the frame header.
pub fn encode(flags: u8, message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(flags);
    // A message over 4 GiB cannot be framed; body limits stop it long
    // before this.
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// The frames of `body`, messages at most `limit` bytes.
pub struct Frames {
    body: axum::body::Body,
    buf: BytesMut,
    limit: usize,
    done: bool,
}

impl Frames {
    /// Reads `body` as frames.
    pub fn new(body: axum::body::Body, limit: usize) -> Self {
        Frames {
            body,
            buf: BytesMut::new(),
            limit,
            done: false,
        }
    }

    fn split_message(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge {
                len,
                limit: self.limit,
            });
        }
        if self.buf.len() < 5 + len {
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        let flags = self.buf[0];
        self.buf.advance(5);
        let data = self.buf.split_to(len).freeze();
        Ok(Some(Frame::Message { flags, data }))
    }
}

impl Stream for Frames {
    type Item = Result<Frame, FrameError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.split_message() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.buf.put(data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.done = true;
                            if !this.buf.is_empty() {
                                return Poll::Ready(Some(Err(FrameError::Truncated)));
                            }
                            return Poll::Ready(Some(Ok(Frame::Trailers(trailers))));
                        }
                    }
                },
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(FrameError::Body(e.to_string()))));
                }
                None => {
                    this.done = true;
                    if !this.buf.is_empty() {
                        return Poll::Ready(Some(Err(FrameError::Truncated)));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn splits_messages_across_chunks_and_reads_trailers() {
        let mut wire = encode(0, b"hello").to_vec();
        wire.extend_from_slice(&encode(COMPRESSED, b""));
        let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = wire
            .chunks(3)
            .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
            .chain(std::iter::once(Ok(http_body::Frame::trailers(
                HeaderMap::new(),
            ))))
            .collect();
        let body = axum::body::Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            chunks,
        )));
        let frames: Vec<_> = Frames::new(body, 1024).collect().await;
        assert!(matches!(&frames[0], Ok(Frame::Message { flags: 0, data }) if data == "hello"));
        assert!(
            matches!(&frames[1], Ok(Frame::Message { flags: COMPRESSED, data }) if data.is_empty())
        );
        assert!(matches!(&frames[2], Ok(Frame::Trailers(_))));
        assert_eq!(frames.len(), 3);
    }

    #[tokio::test]
    async fn refuses_oversized_and_truncated_messages() {
        let body = axum::body::Body::from(encode(0, &[0; 100]));
        let frames: Vec<_> = Frames::new(body, 10).collect().await;
        assert!(matches!(
            &frames[0],
            Err(FrameError::TooLarge {
                len: 100,
                limit: 10
            })
        ));
        let mut wire = encode(0, b"hello").to_vec();
        wire.truncate(7);
        let frames: Vec<_> = Frames::new(axum::body::Body::from(wire), 10)
            .collect()
            .await;
        assert!(matches!(&frames[0], Err(FrameError::Truncated)));
    }
}
