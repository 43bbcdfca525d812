//! The codec of the generated server stubs: tonic's prost codec, except
//! that a request that does not decode is answered INVALID_ARGUMENT.
//!
//! tonic's `ProstCodec` answers INTERNAL, following gRPC's status-code
//! table, which files parse errors under INTERNAL. For a server that is the
//! wrong class of error: the bytes came from the client, retrying them
//! cannot help, and INTERNAL pages the operator of the server for what any
//! unauthenticated client can send. This is the one place outside the
//! server's `api::error` that picks a gRPC code, because the generated
//! stubs decode before any handler runs. Client stubs keep `ProstCodec`
//! (see `build.rs`): a response that does not decode is the server's fault.
//!
//! It also starts each call's two buffers (the request's and the
//! response's) at [`BUFFER_SIZE`] rather than tonic's 8 KiB; see there.

#![warn(clippy::all)] // The crate allows everything for the generated code.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;

/// The capacity each call's request and response buffers start with.
///
/// tonic's 8 KiB default is, for glibc's allocator, a large request: it
/// skips the per-thread cache and first merges every small block freed
/// since the last large one (`malloc_consolidate`), on every call, twice.
/// Tollgate's messages are mostly well under this size (a resource is a few
/// hundred bytes), which stays on the per-thread cache's fast path (below
/// 1,024 bytes). A larger message grows the buffer by doubling, so a 64 KiB
/// list page costs seven reallocations, nothing beside its database work.
pub const BUFFER_SIZE: usize = 512;

/// What tonic is told: [`BUFFER_SIZE`], and tonic's own threshold for
/// batching a stream's messages into one write.
fn buffer_settings() -> BufferSettings {
    const YIELD_THRESHOLD: usize = 32 * 1024;
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

/// The server-side codec: encodes responses `T` like `ProstCodec`, decodes
/// requests `U` with [`RequestDecoder`].
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder { _pd: PhantomData }
    }
}

/// Decodes a request message, answering INVALID_ARGUMENT when the bytes
/// are not one.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!(
                "request is not a valid {} message: {e}",
                message_name::<U>()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

/// The message's type name without its Rust path, e.g. `GetUserRequest`.
fn message_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short() {
        assert_eq!(
            message_name::<crate::tollgate::v1::GetUserRequest>(),
            "GetUserRequest"
        );
    }
}
