//! [`Fleet`]: work on many hosts at once, but no more than a limit.
//!
//! 1. [`Fleet::new`] fixes how many hosts are worked on at the same time.
//! 2. [`Fleet::each`] runs one future per item, at most that many at once, and
//!    returns every result in the items' order (one host failing stops no other).
//! 3. [`Fleet::connect`] is `each` applied to [`SshRemote::connect`].

use futures_util::StreamExt as _;

use super::RemoteError;
use super::known_hosts::KnownHosts;
use super::ssh::{SshRemote, SshTarget};

/// A bound on how many hosts are worked on at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fleet {
    limit: usize,
}

impl Fleet {
    /// At most `limit` hosts at once (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
        }
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Run `work` for every item, at most [`Fleet::limit`] at once; results in order.
    pub async fn each<T, R, F, Fut>(&self, items: impl IntoIterator<Item = T>, work: F) -> Vec<R>
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = R>,
    {
        futures_util::stream::iter(items)
            .map(work)
            .buffered(self.limit)
            .collect()
            .await
    }

    /// Connect to every target, at most [`Fleet::limit`] at once; results in order.
    pub async fn connect(
        &self,
        targets: Vec<SshTarget>,
        known_hosts: &KnownHosts,
    ) -> Vec<Result<SshRemote, RemoteError>> {
        self.each(targets, |target| SshRemote::connect(target, known_hosts))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn never_more_than_the_limit_and_results_in_order() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let results = Fleet::new(3)
            .each(0..20u64, |i| {
                let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    for _ in 0..(20 - i) {
                        tokio::task::yield_now().await;
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    i * 2
                }
            })
            .await;
        assert_eq!(results, (0..20).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }
}
