//! HTTP on the gRPC port: the protocols that are not native gRPC
//! (HTTP/JSON transcoding, Connect, gRPC-Web) and the documents served
//! beside them. Every call they carry ends in the same tonic services
//! behind the same tower layers as native gRPC.

pub mod routes;
pub mod template;
