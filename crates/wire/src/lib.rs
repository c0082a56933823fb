//! The gRPC surface of ExpertMesh.
//!
//! [`pb`] is generated from `proto/emesh.proto`. [`GrpcTransport`] implements
//! [`emesh_comm::Transport`] over one long-lived bidirectional `Exchange.Stream` per pair of
//! ranks (the lower rank dials the higher), so the collectives and everything above them run
//! unchanged across processes and hosts.

pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("emesh.v1");
}

mod transport;

/// HTTP/2 windows for tensor traffic: the 64 KiB defaults cap a stream at a fraction of the
/// link.
pub const STREAM_WINDOW: u32 = 32 << 20;
pub const CONNECTION_WINDOW: u32 = 64 << 20;
/// Largest HTTP/2 frame (the protocol's maximum is 16 MiB - 1; the default 16 KiB splits a
/// megabyte payload into 64 frames).
pub const MAX_FRAME: u32 = (1 << 24) - 1;

/// A client endpoint tuned for exchanges: large windows, no Nagle delay.
pub fn endpoint(url: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME))
}

/// A server builder tuned the same way.
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
}

pub use transport::{ExchangeService, GrpcTransport, PeerSlot};

/// Decodes little-endian f32 bytes (a tensor payload).
pub fn f32s(b: &[u8]) -> Result<Vec<f32>, String> {
    if !b.len().is_multiple_of(4) {
        return Err(format!("payload of {} bytes is not a list of f32", b.len()));
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Encodes f32 values as little-endian bytes.
pub fn f32_bytes(v: &[f32]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.into()
}
