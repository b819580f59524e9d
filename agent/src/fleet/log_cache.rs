//! Reads of the workers' CloudWatch streams, reused a while and made a few
//! at a time. Every open worker or task page refreshes every 2 s, and a
//! task's page reads one stream per worker it ran on; without this, ten tabs
//! on a 40-worker task would ask GetLogEvents 200 times a second, far over
//! the account's 25, and throttle every other reader of the account's logs.
//!
//! - The same read (worker and query) within [`LOG_CACHE_OPEN_SECS`] is
//!   answered from memory, and within [`LOG_CACHE_CLOSED_SECS`] when its
//!   window ended (a finished task's lines do not change).
//! - Reads that would run together wait for one of [`LOG_READS_AT_ONCE`]
//!   slots; a slot is taken for at least [`LOG_READ_SPACING_MS`], so the
//!   agent makes at most 10 reads a second, and a page that waited finds
//!   what another page read meanwhile.
//! - The cache is bounded by lines and by reads, oldest out first.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fossa_contract::limits::{
    LOG_CACHE_CLOSED_SECS, LOG_CACHE_LINES, LOG_CACHE_OPEN_SECS, LOG_CACHE_READS,
    LOG_READS_AT_ONCE, LOG_READ_SPACING_MS, LOG_SETTLE_MS,
};
use fossa_web::model::{LogLine, LogQuery};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// One read kept.
#[derive(Debug)]
struct Kept {
    at: Instant,
    ttl: Duration,
    lines: Vec<LogLine>,
}

/// The reads kept, by worker and query, and the slots reads wait for.
#[derive(Debug)]
pub struct LogCache {
    kept: Mutex<HashMap<(String, LogQuery), Kept>>,
    slots: Arc<Semaphore>,
    spacing: Duration,
}

impl Default for LogCache {
    fn default() -> Self {
        Self::with(
            LOG_READS_AT_ONCE,
            Duration::from_millis(LOG_READ_SPACING_MS),
        )
    }
}

/// How long a read of `q` made at `now_ms` stays good: long once its
/// window has ended and settled, short while the log may still grow.
pub fn ttl(q: &LogQuery, now_ms: i64) -> Duration {
    match q.until_ms {
        Some(u) if u.saturating_add(LOG_SETTLE_MS) < now_ms => {
            Duration::from_secs(LOG_CACHE_CLOSED_SECS)
        }
        _ => Duration::from_secs(LOG_CACHE_OPEN_SECS),
    }
}

impl LogCache {
    fn with(at_once: usize, spacing: Duration) -> Self {
        Self {
            kept: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(at_once)),
            spacing,
        }
    }

    fn fresh(&self, key: &(String, LogQuery)) -> Option<Vec<LogLine>> {
        let kept = self.kept.lock().expect("log cache lock");
        kept.get(key)
            .filter(|k| k.at.elapsed() < k.ttl)
            .map(|k| k.lines.clone())
    }

    /// The lines `q` asks of worker `id`: kept ones while fresh, or else what
    /// `read` returns once a slot is free. Errors are not kept.
    pub async fn read<E, F, Fut>(&self, id: &str, q: LogQuery, read: F) -> Result<Vec<LogLine>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<LogLine>, E>>,
    {
        let key = (id.to_owned(), q);
        if let Some(lines) = self.fresh(&key) {
            return Ok(lines);
        }
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the slots are never closed");
        // Another page may have read the same while this one waited.
        if let Some(lines) = self.fresh(&key) {
            return Ok(lines);
        }
        let started = Instant::now();
        let result = read().await;
        // The slot stays taken for the spacing, without holding up this page.
        let free_at = started + self.spacing;
        tokio::spawn(async move {
            tokio::time::sleep_until(free_at).await;
            drop(slot);
        });
        let lines = result?;
        self.keep(key, &lines, ttl(&q, fossa_contract::unix_now_ms()), started);
        Ok(lines)
    }

    fn keep(&self, key: (String, LogQuery), lines: &[LogLine], ttl: Duration, at: Instant) {
        if lines.len() > LOG_CACHE_LINES {
            return;
        }
        let mut kept = self.kept.lock().expect("log cache lock");
        kept.retain(|_, k| k.at.elapsed() < k.ttl);
        kept.remove(&key);
        let mut held: usize = kept.values().map(|k| k.lines.len()).sum();
        while held + lines.len() > LOG_CACHE_LINES || kept.len() >= LOG_CACHE_READS {
            let Some(oldest) = kept
                .iter()
                .min_by_key(|(_, k)| k.at)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            held -= kept.remove(&oldest).map_or(0, |k| k.lines.len());
        }
        kept.insert(
            key,
            Kept {
                at,
                ttl,
                lines: lines.to_vec(),
            },
        );
    }

    /// Lines and reads kept now.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let kept = self.kept.lock().expect("log cache lock");
        (kept.values().map(|k| k.lines.len()).sum(), kept.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn q(since_ms: Option<i64>, until_ms: Option<i64>) -> LogQuery {
        LogQuery {
            since_ms,
            until_ms,
            limit: 100,
        }
    }

    fn lines(n: usize) -> Vec<LogLine> {
        (0..n)
            .map(|i| LogLine {
                at: i as i64,
                text: format!("line {i}"),
            })
            .collect()
    }

    /// A read that counts its calls and returns `n` lines.
    async fn counted(calls: &AtomicUsize, n: usize) -> Result<Vec<LogLine>, std::io::Error> {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(lines(n))
    }

    #[test]
    fn an_ended_window_is_kept_long_and_an_open_one_briefly() {
        let now = 1_000_000_000;
        let open = Duration::from_secs(LOG_CACHE_OPEN_SECS);
        let closed = Duration::from_secs(LOG_CACHE_CLOSED_SECS);
        assert_eq!(ttl(&q(None, None), now), open, "the live tail");
        assert_eq!(ttl(&q(Some(5), None), now), open);
        assert_eq!(
            ttl(&q(None, Some(now - 1_000)), now),
            open,
            "not settled yet"
        );
        assert_eq!(
            ttl(&q(None, Some(now + 60_000)), now),
            open,
            "still running"
        );
        assert_eq!(ttl(&q(Some(0), Some(now - 60_000)), now), closed);
    }

    #[tokio::test]
    async fn the_same_read_is_answered_once_and_a_different_one_is_read() {
        let cache = LogCache::with(4, Duration::ZERO);
        let calls = AtomicUsize::new(0);
        for _ in 0..5 {
            let got = cache
                .read("w1", q(None, None), || counted(&calls, 3))
                .await
                .unwrap();
            assert_eq!(got.len(), 3);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        cache
            .read("w1", q(Some(1), None), || counted(&calls, 3))
            .await
            .unwrap();
        cache
            .read("w2", q(None, None), || counted(&calls, 3))
            .await
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "another query, another worker"
        );
        // Errors are not kept: the next page reads again.
        let failed: Result<_, std::io::Error> = cache
            .read("w3", q(None, None), || async {
                Err(std::io::Error::other("throttled"))
            })
            .await;
        assert!(failed.is_err());
        cache
            .read("w3", q(None, None), || counted(&calls, 1))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn pages_waiting_for_a_slot_share_the_read_made_meanwhile() {
        let cache = Arc::new(LogCache::with(1, Duration::ZERO));
        let calls = Arc::new(AtomicUsize::new(0));
        let pages: Vec<_> = (0..8)
            .map(|_| {
                let (cache, calls) = (Arc::clone(&cache), Arc::clone(&calls));
                tokio::spawn(async move {
                    cache
                        .read("w1", q(None, None), || async {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            counted(&calls, 2).await
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for p in pages {
            assert_eq!(p.await.unwrap().len(), 2);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "eight pages, one read");
    }

    #[tokio::test(start_paused = true)]
    async fn reads_are_spaced_so_the_rate_stays_bounded() {
        let cache = Arc::new(LogCache::with(2, Duration::from_millis(400)));
        let calls = Arc::new(AtomicUsize::new(0));
        let t = Instant::now();
        let pages: Vec<_> = (0..10)
            .map(|i| {
                let (cache, calls) = (Arc::clone(&cache), Arc::clone(&calls));
                tokio::spawn(async move {
                    cache
                        .read(&format!("w{i}"), q(None, None), || counted(&calls, 1))
                        .await
                        .unwrap();
                    Instant::now()
                })
            })
            .collect();
        let mut done = Vec::new();
        for p in pages {
            done.push(p.await.unwrap() - t);
        }
        done.sort();
        assert_eq!(calls.load(Ordering::SeqCst), 10);
        // Two at once, then two more every 400 ms: the last pair at 1.6 s.
        assert_eq!(done[1], Duration::ZERO, "{done:?}");
        assert!(done[2] >= Duration::from_millis(400), "{done:?}");
        assert!(done[9] >= Duration::from_millis(1600), "{done:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_since_on_every_request_misses_the_cache_but_not_the_spacing() {
        // The security review's case: a client varying `since` so that no
        // read is ever answered from memory. Every read still waits for a
        // slot, so CloudWatch sees the same bounded rate, and the cache
        // stays within its bounds.
        let cache = Arc::new(LogCache::with(2, Duration::from_millis(400)));
        let calls = Arc::new(AtomicUsize::new(0));
        let t = Instant::now();
        let pages: Vec<_> = (0..20)
            .map(|i| {
                let (cache, calls) = (Arc::clone(&cache), Arc::clone(&calls));
                tokio::spawn(async move {
                    cache
                        .read("w1", q(Some(1_000 + i), None), || counted(&calls, 1))
                        .await
                        .unwrap();
                })
            })
            .collect();
        for p in pages {
            p.await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 20, "no two alike");
        // Two at once, two more every 400 ms: at most 5 a second.
        assert!(
            t.elapsed() >= Duration::from_millis(3600),
            "{:?}",
            t.elapsed()
        );
        assert!(cache.kept.lock().unwrap().len() <= LOG_CACHE_READS);
    }

    #[tokio::test]
    async fn the_cache_is_bounded_by_lines_and_reads() {
        let cache = LogCache::with(4, Duration::ZERO);
        let calls = AtomicUsize::new(0);
        let big = LOG_CACHE_LINES / 4;
        for i in 0..6 {
            cache
                .read(&format!("w{i}"), q(None, None), || counted(&calls, big))
                .await
                .unwrap();
        }
        assert_eq!(cache.size(), (LOG_CACHE_LINES, 4), "the oldest two went");
        // The newest is still kept; the oldest is read again.
        cache
            .read("w5", q(None, None), || counted(&calls, big))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        cache
            .read("w0", q(None, None), || counted(&calls, big))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 7);
        // A read larger than the whole cache is served but not kept.
        cache
            .read("huge", q(None, None), || {
                counted(&calls, LOG_CACHE_LINES + 1)
            })
            .await
            .unwrap();
        assert_eq!(cache.size().0, LOG_CACHE_LINES);
        // Many empty reads stop at the count bound.
        for i in 0..(LOG_CACHE_READS + 50) {
            cache
                .read(&format!("e{i}"), q(None, None), || counted(&calls, 0))
                .await
                .unwrap();
        }
        assert!(cache.size().1 <= LOG_CACHE_READS, "{:?}", cache.size());
    }
}
