//! Short-lived shared answers from EC2, so the steady state (resyncs with nothing to change)
//! costs a handful of describes per VPC instead of several per object.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One key's answer, stamped with when its fetch started (a describe that began before a
/// change may not show it, so it counts as older than the change).
type Slot<V> = Arc<tokio::sync::Mutex<Option<(Instant, V)>>>;

/// Entries expire after `ttl`; expired entries are dropped on every insert, so the map holds
/// at most the keys used within one ttl (a few VPCs and subnet queries). Fetches are
/// single-flight per key: concurrent callers for one key share one fetch, and callers for
/// other keys never wait for it (the map's own lock is held only to find a key's slot).
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: std::sync::Mutex<HashMap<K, Slot<V>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Default::default(),
        }
    }

    fn slot(&self, key: &K) -> Slot<V> {
        let mut entries = self.entries.lock().expect("cache lock");
        if let Some(s) = entries.get(key) {
            return s.clone();
        }
        let ttl = self.ttl;
        // Drop expired answers (a slot being fetched is locked: keep it).
        entries.retain(|_, s| {
            s.try_lock()
                .map(|v| v.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl))
                .unwrap_or(true)
        });
        entries.entry(key.clone()).or_default().clone()
    }

    /// The cached value, or `fetch`'s (one fetch per key at a time).
    pub async fn get_or_fetch<E, F, Fut>(&self, key: &K, fetch: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.get_or_fetch_fresh(key, self.ttl, None, fetch).await
    }

    /// Like `get_or_fetch`, but a cached value counts only if it is younger than `max_age`
    /// (and the ttl) and its fetch started at or after `not_before` (e.g. the last change we
    /// made).
    pub async fn get_or_fetch_fresh<E, F, Fut>(
        &self,
        key: &K,
        max_age: Duration,
        not_before: Option<Instant>,
        fetch: F,
    ) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let (_, v) = self
            .get_or_fetch_stamped(key, max_age, not_before, fetch)
            .await?;
        Ok(v)
    }

    /// Like `get_or_fetch_fresh`, with when the answer's fetch started. `max_age` zero: always
    /// a new fetch, but still one at a time per key (callers that wait for it may share it).
    pub async fn get_or_fetch_stamped<E, F, Fut>(
        &self,
        key: &K,
        max_age: Duration,
        not_before: Option<Instant>,
        fetch: F,
    ) -> Result<(Instant, V), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = self.slot(key);
        let mut held = slot.lock().await;
        if let Some((at, v)) = held.as_ref()
            && usable(*at, max_age.min(self.ttl), not_before)
        {
            return Ok((*at, v.clone()));
        }
        let started = Instant::now();
        let v = fetch().await?;
        *held = Some((started, v.clone()));
        Ok((started, v))
    }

    /// The cached value if it is younger than `max_age` (and the ttl) and was stored at or
    /// after `not_before`. Does not wait for a fetch in flight.
    pub async fn get_fresh(
        &self,
        key: &K,
        max_age: Duration,
        not_before: Option<Instant>,
    ) -> Option<V> {
        let slot = self.entries.lock().expect("cache lock").get(key)?.clone();
        let held = slot.lock().await;
        let (at, v) = held.as_ref()?;
        usable(*at, max_age.min(self.ttl), not_before).then(|| v.clone())
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub async fn put(&self, key: K, v: V) {
        let slot = self.slot(&key);
        *slot.lock().await = Some((Instant::now(), v));
    }

    /// Drops expired entries (inserts do too; this frees them when nothing is inserted).
    pub async fn prune(&self) {
        let ttl = self.ttl;
        self.entries.lock().expect("cache lock").retain(|_, s| {
            s.try_lock()
                .map(|v| v.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl))
                .unwrap_or(true)
        });
    }

    pub async fn invalidate(&self, key: &K) {
        self.entries.lock().expect("cache lock").remove(key);
    }

    /// How many entries are held (expired ones included until the next insert).
    pub async fn entry_count(&self) -> usize {
        self.entries.lock().expect("cache lock").len()
    }
}

fn usable(at: Instant, max_age: Duration, not_before: Option<Instant>) -> bool {
    at.elapsed() < max_age && not_before.is_none_or(|nb| at >= nb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn fetches_once_per_ttl_and_forgets_expired_keys() {
        let cache: TtlCache<String, u32> = TtlCache::new(Duration::from_millis(50));
        let calls = AtomicU32::new(0);
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(7)
        };
        assert_eq!(cache.get_or_fetch(&"a".to_string(), fetch).await, Ok(7));
        assert_eq!(cache.get_or_fetch(&"a".to_string(), fetch).await, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        cache.put("b".into(), 1).await;
        assert_eq!(cache.entry_count().await, 1, "expired key a was dropped");
        assert_eq!(cache.get_or_fetch(&"a".to_string(), fetch).await, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        cache.invalidate(&"a".to_string()).await;
        assert_eq!(cache.get_or_fetch(&"a".to_string(), fetch).await, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn fresh_reads_honour_max_age_and_not_before() {
        let cache: TtlCache<u8, u8> = TtlCache::new(Duration::from_secs(60));
        cache.put(1, 10).await;
        assert_eq!(
            cache.get_fresh(&1, Duration::from_secs(5), None).await,
            Some(10)
        );
        assert_eq!(cache.get_fresh(&1, Duration::ZERO, None).await, None);
        let later = Instant::now() + Duration::from_millis(1);
        assert_eq!(
            cache
                .get_fresh(&1, Duration::from_secs(5), Some(later))
                .await,
            None,
            "stored before the change"
        );
        let got = cache
            .get_or_fetch_fresh(&1, Duration::from_secs(5), Some(later), || async {
                Ok::<u8, ()>(11)
            })
            .await;
        assert_eq!(got, Ok(11), "refetched");
        assert_eq!(
            cache.get_fresh(&1, Duration::from_secs(5), None).await,
            Some(11)
        );
    }

    /// The VPC poller's way in: every call describes anew (max age zero), and a reader that
    /// comes while it is in flight shares its answer instead of describing again.
    #[tokio::test]
    async fn a_stamped_fetch_is_always_new_and_shared_with_readers_that_wait_for_it() {
        let cache: Arc<TtlCache<u8, u8>> = Arc::new(TtlCache::new(Duration::from_secs(60)));
        let calls = Arc::new(AtomicU32::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let before = Instant::now();
        let poll = tokio::spawn({
            let (cache, calls) = (cache.clone(), calls.clone());
            async move {
                cache
                    .get_or_fetch_stamped(&1, Duration::ZERO, None, || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        released.await.ok();
                        Ok::<u8, ()>(5)
                    })
                    .await
            }
        });
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let reader = tokio::spawn({
            let (cache, calls) = (cache.clone(), calls.clone());
            async move {
                cache
                    .get_or_fetch(&1, || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok::<u8, ()>(6)
                    })
                    .await
            }
        });
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        let (taken, v) = poll.await.unwrap().unwrap();
        assert!(taken >= before && v == 5);
        assert_eq!(reader.await.unwrap(), Ok(5), "the reader shared the poll");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let again = cache
            .get_or_fetch_stamped(&1, Duration::ZERO, None, || async { Ok::<u8, ()>(7) })
            .await;
        assert_eq!(again.map(|(_, v)| v), Ok(7), "max age zero: a new fetch");
    }

    #[tokio::test]
    async fn one_fetch_per_key_and_keys_do_not_wait_for_each_other() {
        let cache: Arc<TtlCache<u8, u8>> = Arc::new(TtlCache::new(Duration::from_secs(60)));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let slow = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get_or_fetch(&1, || async {
                        released.await.ok();
                        Ok::<u8, ()>(1)
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Another key answers while key 1's fetch is in flight.
        let other = tokio::time::timeout(
            Duration::from_secs(2),
            cache.get_or_fetch(&2, || async { Ok::<u8, ()>(2) }),
        )
        .await;
        assert_eq!(other, Ok(Ok(2)));
        // A second caller for key 1 waits for that fetch and shares its answer.
        let calls = Arc::new(AtomicU32::new(0));
        let waiter = tokio::spawn({
            let (cache, calls) = (cache.clone(), calls.clone());
            async move {
                cache
                    .get_or_fetch(&1, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok::<u8, ()>(9)
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        release.send(()).unwrap();
        assert_eq!(slow.await.unwrap(), Ok(1));
        assert_eq!(waiter.await.unwrap(), Ok(1));
        assert_eq!(calls.load(Ordering::SeqCst), 0, "one fetch for key 1");
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let cache: TtlCache<u8, u8> = TtlCache::new(Duration::from_secs(60));
        assert_eq!(
            cache
                .get_or_fetch(&1, || async { Err::<u8, &str>("boom") })
                .await,
            Err("boom")
        );
        assert_eq!(
            cache.get_or_fetch(&1, || async { Ok::<u8, &str>(2) }).await,
            Ok(2)
        );
    }
}
