//! Short-lived shared answers from EC2, so the steady state (resyncs with nothing to change)
//! costs a handful of describes per VPC instead of several per object.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// Entries expire after `ttl`; expired entries are dropped on every insert, so the map holds
/// at most the keys used within one ttl (a few VPCs and subnet queries).
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The cached value, or `fetch`'s. The lock is held while fetching, so concurrent
    /// reconciles of one VPC share a single describe instead of racing to make one each.
    pub async fn get_or_fetch<E, F, Fut>(&self, key: &K, fetch: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.get_or_fetch_fresh(key, self.ttl, None, fetch).await
    }

    /// Like `get_or_fetch`, but a cached value counts only if it is younger than `max_age`
    /// (and the ttl) and was stored at or after `not_before` (e.g. the last change we made).
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
        let mut entries = self.entries.lock().await;
        if let Some((at, v)) = entries.get(key)
            && usable(*at, max_age.min(self.ttl), not_before)
        {
            return Ok(v.clone());
        }
        let v = fetch().await?;
        let ttl = self.ttl;
        entries.retain(|_, (at, _)| at.elapsed() < ttl);
        entries.insert(key.clone(), (Instant::now(), v.clone()));
        Ok(v)
    }

    /// The cached value if it is younger than `max_age` (and the ttl) and was stored at or
    /// after `not_before`.
    pub async fn get_fresh(
        &self,
        key: &K,
        max_age: Duration,
        not_before: Option<Instant>,
    ) -> Option<V> {
        let entries = self.entries.lock().await;
        let (at, v) = entries.get(key)?;
        usable(*at, max_age.min(self.ttl), not_before).then(|| v.clone())
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub async fn put(&self, key: K, v: V) {
        let ttl = self.ttl;
        let mut entries = self.entries.lock().await;
        entries.retain(|_, (at, _)| at.elapsed() < ttl);
        entries.insert(key, (Instant::now(), v));
    }

    /// Drops expired entries (inserts do too; this frees them when nothing is inserted).
    pub async fn prune(&self) {
        let ttl = self.ttl;
        self.entries
            .lock()
            .await
            .retain(|_, (at, _)| at.elapsed() < ttl);
    }

    pub async fn invalidate(&self, key: &K) {
        self.entries.lock().await.remove(key);
    }

    /// How many entries are held (expired ones included until the next insert).
    pub async fn entry_count(&self) -> usize {
        self.entries.lock().await.len()
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
