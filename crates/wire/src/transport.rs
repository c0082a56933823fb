//! [`emesh_comm::Transport`] over gRPC streams.

use crate::pb::exchange_client::ExchangeClient;
use crate::pb::exchange_server::Exchange;
use crate::pb::Frame;
use bytes::Bytes;
use emesh_comm::{CommError, Mailbox, Phase, Tag, Transport};
use emesh_common::{Epoch, Rank};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// One rank's side of the mesh: its mailbox and an outbound queue per peer.
pub struct GrpcTransport {
    rank: Rank,
    world: usize,
    mailbox: Arc<Mailbox>,
    peers: RwLock<Vec<Option<mpsc::UnboundedSender<Frame>>>>,
}

impl GrpcTransport {
    pub fn new(rank: Rank, world: usize, epoch: Epoch, timeout: Duration) -> Arc<Self> {
        Arc::new(GrpcTransport {
            rank,
            world,
            mailbox: Arc::new(Mailbox::new(rank, epoch, timeout)),
            peers: RwLock::new(vec![None; world]),
        })
    }

    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    fn set_peer(&self, peer: Rank, tx: mpsc::UnboundedSender<Frame>) {
        let mut p = self.peers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = p.get_mut(peer.0 as usize) {
            *slot = Some(tx);
        }
    }

    /// Number of peers with an open stream.
    pub fn connected(&self) -> usize {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| p.as_ref().is_some_and(|t| !t.is_closed()))
            .count()
    }

    /// Dials every higher rank (retrying until `deadline`) and waits until every peer, dialed
    /// or dialing us, has a stream.
    pub async fn connect(self: &Arc<Self>, addrs: &[String], deadline: Duration) -> Result<(), CommError> {
        let until = Instant::now() + deadline;
        for q in (self.rank.0 as usize + 1)..self.world {
            let addr = addrs.get(q).ok_or_else(|| CommError::Unreachable {
                rank: self.rank,
                peer: Rank(q as u32),
                reason: "no address".into(),
            })?;
            let url = if addr.starts_with("http") { addr.clone() } else { format!("http://{addr}") };
            let peer = Rank(q as u32);
            let unreachable = |reason: String| CommError::Unreachable { rank: self.rank, peer, reason };
            // The peer may not have its placement yet: retry until the deadline.
            let (tx, resp) = loop {
                let attempt = async {
                    let channel =
                        crate::endpoint(&url).map_err(|e| e.to_string())?.connect().await.map_err(|e| e.to_string())?;
                    let client = ExchangeClient::new(channel);
                    let mut client = client.max_decoding_message_size(1 << 30).max_encoding_message_size(1 << 30);
                    let (tx, rx) = mpsc::unbounded_channel();
                    let hello =
                        Frame { epoch: self.mailbox.epoch().0, phase: 0, from_rank: self.rank.0, ..Default::default() };
                    let _ = tx.send(hello);
                    let resp =
                        client.stream(UnboundedReceiverStream::new(rx)).await.map_err(|s| s.message().to_string())?;
                    Ok::<_, String>((tx, resp))
                };
                match attempt.await {
                    Ok(r) => break r,
                    Err(e) if Instant::now() < until => {
                        tracing::debug!("dial {url}: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(unreachable(e)),
                }
            };
            self.set_peer(Rank(q as u32), tx);
            spawn_reader(self.clone(), Rank(q as u32), resp.into_inner());
        }
        while self.connected() < self.world - 1 {
            if Instant::now() >= until {
                return Err(CommError::Closed {
                    rank: self.rank,
                    reason: format!("only {} of {} peers connected", self.connected(), self.world - 1),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// Moves frames from a peer's stream into the mailbox until the stream ends.
fn spawn_reader(t: Arc<GrpcTransport>, peer: Rank, mut s: Streaming<Frame>) {
    tokio::spawn(async move {
        loop {
            match s.next().await {
                Some(Ok(f)) => {
                    let Some(phase) = Phase::from_u32(f.phase) else { continue };
                    let tag = Tag { epoch: Epoch(f.epoch), step: f.step, layer: f.layer, phase };
                    if let Err(e) = t.mailbox.deliver(Rank(f.from_rank), tag, f.payload) {
                        tracing::warn!("{e}");
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("{}: stream from {peer} ended: {}", t.rank, e.message());
                    break;
                }
                None => break,
            }
        }
        let mut p = t.peers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = p.get_mut(peer.0 as usize) {
            *slot = None;
        }
    });
}

impl Transport for GrpcTransport {
    fn rank(&self) -> Rank {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn send(&self, to: Rank, tag: Tag, data: Bytes) -> Result<(), CommError> {
        let p = self.peers.read().unwrap_or_else(|e| e.into_inner());
        let tx = p.get(to.0 as usize).and_then(|t| t.as_ref()).ok_or_else(|| CommError::Unreachable {
            rank: self.rank,
            peer: to,
            reason: "no stream".into(),
        })?;
        let f = Frame {
            epoch: tag.epoch.0,
            step: tag.step,
            layer: tag.layer,
            phase: tag.phase as u32,
            from_rank: self.rank.0,
            payload: data,
        };
        tx.send(f).map_err(|_| CommError::Unreachable { rank: self.rank, peer: to, reason: "stream closed".into() })
    }
    fn recv(&self, from: Rank, tag: Tag) -> Result<Bytes, CommError> {
        self.mailbox.take(from, tag)
    }
}

/// Where the exchange service finds the transport once the worker knows its rank.
pub type PeerSlot = Arc<RwLock<Option<Arc<GrpcTransport>>>>;

/// The `Exchange` service: accepts streams dialed by lower ranks.
pub struct ExchangeService {
    pub slot: PeerSlot,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Exchange for ExchangeService {
    type StreamStream = FrameStream;

    async fn stream(&self, req: Request<Streaming<Frame>>) -> Result<Response<Self::StreamStream>, Status> {
        let t = self
            .slot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Status::unavailable("this worker has no placement yet"))?;
        let mut inbound = req.into_inner();
        let hello =
            inbound.next().await.ok_or_else(|| Status::invalid_argument("stream ended before its hello frame"))??;
        if hello.phase != 0 || hello.from_rank as usize >= t.world || hello.from_rank == t.rank.0 {
            return Err(Status::invalid_argument(format!("bad hello frame from rank {}", hello.from_rank)));
        }
        let cur = t.mailbox.epoch();
        if hello.epoch != cur.0 {
            return Err(Status::failed_precondition(format!(
                "epoch {} refused (current epoch {})",
                hello.epoch, cur.0
            )));
        }
        let peer = Rank(hello.from_rank);
        let (tx, rx) = mpsc::unbounded_channel();
        t.set_peer(peer, tx);
        spawn_reader(t.clone(), peer, inbound);
        let out = UnboundedReceiverStream::new(rx).map(Ok::<Frame, Status>);
        Ok(Response::new(Box::pin(out)))
    }
}
