//! Collective communication between ranks.
//!
//! A [`Transport`] moves tagged byte payloads between ranks; the collectives ([`all_to_all`],
//! [`all_gather`], [`barrier`]) are written once on top of it, so the in-process transport
//! ([`InProcess`]) and the gRPC one behave identically. Every message carries its placement
//! epoch in its [`Tag`]; a mailbox refuses messages from any other epoch (fencing).

mod mailbox;
mod payload;

pub use mailbox::Mailbox;
pub use payload::{decode_rows, encode_rows, PayloadDtype};

use bytes::Bytes;
use emesh_common::{Epoch, Rank};
use std::sync::Arc;
use std::time::Duration;

/// Identifies one message of one collective: which step, layer and phase it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    pub epoch: Epoch,
    pub step: u64,
    pub layer: u32,
    pub phase: Phase,
}

/// Which exchange of a layer a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Phase {
    AttnReduce = 1,
    Dispatch = 2,
    Combine = 3,
    MoeGather = 4,
    Barrier = 5,
}

impl Phase {
    pub fn from_u32(v: u32) -> Option<Phase> {
        Some(match v {
            1 => Phase::AttnReduce,
            2 => Phase::Dispatch,
            3 => Phase::Combine,
            4 => Phase::MoeGather,
            5 => Phase::Barrier,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CommError {
    #[error("{rank}: no message from {from} for {tag:?} within {timeout:?}")]
    Timeout { rank: Rank, from: Rank, tag: Tag, timeout: Duration },
    #[error("{rank}: peer {peer} is unreachable: {reason}")]
    Unreachable { rank: Rank, peer: Rank, reason: String },
    #[error("{rank}: message for epoch {got} refused (current epoch {current})")]
    StaleEpoch { rank: Rank, got: Epoch, current: Epoch },
    #[error("{rank}: transport closed: {reason}")]
    Closed { rank: Rank, reason: String },
    #[error("malformed payload: {0}")]
    Payload(String),
}

/// Moves tagged payloads between ranks. `send` never blocks on the receiver; `recv` waits for
/// the message from `from` with `tag`.
pub trait Transport: Send + Sync {
    fn rank(&self) -> Rank;
    fn world(&self) -> usize;
    fn send(&self, to: Rank, tag: Tag, data: Bytes) -> Result<(), CommError>;
    fn recv(&self, from: Rank, tag: Tag) -> Result<Bytes, CommError>;
}

/// Sends `out[q]` to every rank `q` (possibly empty; our own is kept locally) and returns what
/// every rank sent to us, indexed by sender.
pub fn all_to_all(t: &dyn Transport, tag: Tag, mut out: Vec<Bytes>) -> Result<Vec<Bytes>, CommError> {
    let me = t.rank().0 as usize;
    assert_eq!(out.len(), t.world(), "all_to_all needs one payload per rank");
    let own = std::mem::take(&mut out[me]);
    for (q, data) in out.into_iter().enumerate() {
        if q != me {
            t.send(Rank(q as u32), tag, data)?;
        }
    }
    (0..t.world()).map(|q| if q == me { Ok(own.clone()) } else { t.recv(Rank(q as u32), tag) }).collect()
}

/// Every member of `group` (ascending ranks, including us) contributes `data`; returns the
/// contributions indexed by position in `group`.
pub fn all_gather(t: &dyn Transport, tag: Tag, group: &[Rank], data: Bytes) -> Result<Vec<Bytes>, CommError> {
    let me = t.rank();
    for &q in group {
        if q != me {
            t.send(q, tag, data.clone())?;
        }
    }
    group.iter().map(|&q| if q == me { Ok(data.clone()) } else { t.recv(q, tag) }).collect()
}

/// Waits until every rank of `group` has reached the same tag.
pub fn barrier(t: &dyn Transport, tag: Tag, group: &[Rank]) -> Result<(), CommError> {
    all_gather(t, tag, group, Bytes::new()).map(|_| ())
}

/// An in-process cluster: one mailbox per rank, delivery by direct insertion.
pub struct InProcess {
    rank: Rank,
    boxes: Arc<Vec<Arc<Mailbox>>>,
}

impl InProcess {
    /// Transports for ranks `0..world`, all sharing one set of mailboxes.
    pub fn cluster(world: usize, epoch: Epoch, timeout: Duration) -> Vec<InProcess> {
        let boxes: Arc<Vec<Arc<Mailbox>>> =
            Arc::new((0..world).map(|r| Arc::new(Mailbox::new(Rank(r as u32), epoch, timeout))).collect());
        (0..world).map(|r| InProcess { rank: Rank(r as u32), boxes: boxes.clone() }).collect()
    }

    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.boxes[self.rank.0 as usize]
    }
}

impl Transport for InProcess {
    fn rank(&self) -> Rank {
        self.rank
    }
    fn world(&self) -> usize {
        self.boxes.len()
    }
    fn send(&self, to: Rank, tag: Tag, data: Bytes) -> Result<(), CommError> {
        let b = self.boxes.get(to.0 as usize).ok_or_else(|| CommError::Unreachable {
            rank: self.rank,
            peer: to,
            reason: "no such rank".into(),
        })?;
        b.deliver(self.rank, tag, data)
    }
    fn recv(&self, from: Rank, tag: Tag) -> Result<Bytes, CommError> {
        self.mailbox().take(from, tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(step: u64, phase: Phase) -> Tag {
        Tag { epoch: Epoch(1), step, layer: 0, phase }
    }

    #[test]
    fn collectives_deliver_by_sender_and_tag() {
        let ts = InProcess::cluster(3, Epoch(1), Duration::from_secs(5));
        std::thread::scope(|s| {
            let hs: Vec<_> = ts
                .iter()
                .map(|t| {
                    s.spawn(move || {
                        let me = t.rank().0 as u8;
                        let out: Vec<Bytes> = (0..3u8).map(|q| Bytes::from(vec![me, q])).collect();
                        let got = all_to_all(t, tag(1, Phase::Dispatch), out).unwrap();
                        for (q, g) in got.iter().enumerate() {
                            assert_eq!(&g[..], &[q as u8, me]);
                        }
                        let group = [Rank(0), Rank(2)];
                        if me != 1 {
                            let g = all_gather(t, tag(1, Phase::AttnReduce), &group, Bytes::from(vec![me])).unwrap();
                            assert_eq!(g.iter().map(|b| b[0]).collect::<Vec<_>>(), vec![0, 2]);
                        }
                        barrier(t, tag(2, Phase::Barrier), &[Rank(0), Rank(1), Rank(2)]).unwrap();
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        });
    }

    #[test]
    fn stale_epochs_are_refused_and_missing_peers_time_out() {
        let ts = InProcess::cluster(2, Epoch(3), Duration::from_millis(50));
        let old = Tag { epoch: Epoch(2), step: 0, layer: 0, phase: Phase::Dispatch };
        assert!(matches!(ts[0].send(Rank(1), old, Bytes::new()), Err(CommError::StaleEpoch { .. })));
        let cur = Tag { epoch: Epoch(3), ..old };
        assert!(matches!(ts[1].recv(Rank(0), cur), Err(CommError::Timeout { .. })));
    }
}
