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
