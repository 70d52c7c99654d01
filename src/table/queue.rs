//! Requests waiting for a backend with free capacity (`max_connections`), per service: bounded
//! in length (`max_queue`) and in time (`queue_timeout`), like HAProxy's `maxconn` queue. A
//! released connection wakes one waiter.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
pub struct WaitQueue {
    freed: Notify,
    waiting: AtomicU32,
}

/// Why a request stopped waiting without a backend.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `max_queue` requests were waiting already.
    Full,
    TimedOut,
}

impl WaitQueue {
    /// Requests waiting now.
    pub fn depth(&self) -> u32 {
        self.waiting.load(Relaxed)
    }

    /// A backend has a free slot: one waiter may try again.
    pub fn release_one(&self) {
        if self.waiting.load(Relaxed) > 0 {
            self.freed.notify_one();
        }
    }

    /// Waits until `pick` returns something, a slot is freed between tries, or `timeout`.
    pub async fn wait_for<T>(
        &self,
        max_waiting: u32,
        timeout: Duration,
        mut pick: impl FnMut() -> Option<T>,
    ) -> Result<T, Refused> {
        if self
            .waiting
            .fetch_update(Relaxed, Relaxed, |w| (w < max_waiting).then_some(w + 1))
            .is_err()
        {
            return Err(Refused::Full);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let result = loop {
            let freed = self.freed.notified();
            if let Some(found) = pick() {
                break Ok(found);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                break pick().ok_or(Refused::TimedOut);
            }
        };
        self.waiting.fetch_sub(1, Relaxed);
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_waiter_gets_a_freed_slot_and_others_time_out_or_are_refused() {
        let queue = Arc::new(WaitQueue::default());
        let free = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (queue, free) = (Arc::clone(&queue), Arc::clone(&free));
            tokio::spawn(async move {
                queue
                    .wait_for(1, Duration::from_secs(5), || {
                        free.load(Relaxed).then_some(7)
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(queue.depth(), 1);
        assert_eq!(
            queue
                .wait_for(1, Duration::from_secs(5), || None::<u8>)
                .await,
            Err(Refused::Full)
        );
        free.store(true, Relaxed);
        queue.release_one();
        assert_eq!(waiter.await.unwrap(), Ok(7));
        assert_eq!(
            queue
                .wait_for(1, Duration::from_millis(20), || None::<u8>)
                .await,
            Err(Refused::TimedOut)
        );
        assert_eq!(queue.depth(), 0);
    }
}
