//! Where a rank's incoming messages wait until the collective that needs them asks.

use crate::{CommError, Tag};
use bytes::Bytes;
use emesh_common::{Epoch, Rank};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a receiver polls before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

struct State {
    epoch: Epoch,
    messages: HashMap<(Rank, Tag), Bytes>,
    closed: Option<String>,
}

pub struct Mailbox {
    rank: Rank,
    timeout: Duration,
    state: Mutex<State>,
    ready: Condvar,
}

impl Mailbox {
    pub fn new(rank: Rank, epoch: Epoch, timeout: Duration) -> Self {
        Mailbox {
            rank,
            timeout,
            state: Mutex::new(State { epoch, messages: HashMap::new(), closed: None }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts a message, unless it belongs to another epoch.
    pub fn deliver(&self, from: Rank, tag: Tag, data: Bytes) -> Result<(), CommError> {
        let mut s = self.lock();
        if tag.epoch != s.epoch {
            return Err(CommError::StaleEpoch { rank: self.rank, got: tag.epoch, current: s.epoch });
        }
        s.messages.insert((from, tag), data);
        self.ready.notify_all();
        Ok(())
    }

    /// Waits for the message from `from` with `tag`. Polls briefly before sleeping: exchanges
    /// are on the critical path of every layer and a wake-up costs more than a short poll.
    pub fn take(&self, from: Rank, tag: Tag) -> Result<Bytes, CommError> {
        let deadline = Instant::now() + self.timeout;
        let spin_until = Instant::now() + SPIN;
        while Instant::now() < spin_until {
            {
                let mut s = self.lock();
                if s.closed.is_some() || tag.epoch != s.epoch {
                    break;
                }
                if let Some(d) = s.messages.remove(&(from, tag)) {
                    return Ok(d);
                }
            }
            std::thread::yield_now();
        }
        let mut s = self.lock();
        loop {
            if let Some(reason) = &s.closed {
                return Err(CommError::Closed { rank: self.rank, reason: reason.clone() });
            }
            if tag.epoch != s.epoch {
                return Err(CommError::StaleEpoch { rank: self.rank, got: tag.epoch, current: s.epoch });
            }
            if let Some(d) = s.messages.remove(&(from, tag)) {
                return Ok(d);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CommError::Timeout { rank: self.rank, from, tag, timeout: self.timeout });
            }
            s = self.ready.wait_timeout(s, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Moves to a new epoch: pending messages of the old one are dropped and waiters fail.
    pub fn set_epoch(&self, epoch: Epoch) {
        let mut s = self.lock();
        s.epoch = epoch;
        s.messages.retain(|(_, t), _| t.epoch == epoch);
        self.ready.notify_all();
    }

    pub fn epoch(&self) -> Epoch {
        self.lock().epoch
    }

    /// Fails every current and future wait (the transport is shutting down or fenced).
    pub fn close(&self, reason: &str) {
        let mut s = self.lock();
        s.closed = Some(reason.to_string());
        self.ready.notify_all();
    }

    /// Drops every message of steps before `step` (housekeeping after a completed step).
    pub fn drop_before(&self, step: u64) {
        self.lock().messages.retain(|(_, t), _| t.step >= step);
    }
}
