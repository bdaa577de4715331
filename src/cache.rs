//! The cross-mount value cache every backend reads through: keyed by the identity that read a value plus
//! the request that read it, so one pod never receives what its own identity could not read.
//!
//! Concurrent identical reads are coalesced (one backend request, every caller gets its result) and the
//! result is kept for a TTL the admin sets with `--cache-ttl`. The trade-off: a value rotated in the backend
//! reaches pods up to that TTL later (the driver re-mounts every rotation poll, 2 minutes by default), in
//! exchange for one backend read per distinct request per TTL instead of one per pod. A TTL of 0 turns the
//! cache and the coalescing off. Writes and leased (dynamic) secrets are never kept: callers mark a loaded
//! value as not cacheable and it is dropped as soon as its concurrent waiters have it.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::error::MountError;

/// A value as loaded, with whether it may be kept.
pub struct Loaded<V> {
    pub value: V,
    pub cacheable: bool,
}

/// Values by (identity, request).
pub struct ValueCache<K, V> {
    cache: Option<Cache<K, Arc<Loaded<V>>>>,
}

impl<K, V> ValueCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A cache keeping values for `ttl` (0 = off), holding at most `max_bytes` as `size_of` counts them.
    pub fn new(ttl: Duration, max_bytes: u64, size_of: fn(&V) -> usize) -> Self {
        let cache = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .time_to_live(ttl)
                .weigher(move |_: &K, loaded: &Arc<Loaded<V>>| {
                    u32::try_from(size_of(&loaded.value))
                        .unwrap_or(u32::MAX)
                        .max(1)
                })
                .max_capacity(max_bytes)
                .build()
        });
        Self { cache }
    }

    /// Whether the cache is on (a TTL above 0).
    pub fn is_on(&self) -> bool {
        self.cache.is_some()
    }

    /// Whether a value for `key` is kept now.
    pub fn contains(&self, key: &K) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|cache| cache.contains_key(key))
    }

    /// Drops the value kept for `key`, so the next read loads it afresh.
    pub async fn invalidate(&self, key: &K) {
        if let Some(cache) = &self.cache {
            cache.invalidate(key).await;
        }
    }

    /// The value for `key`: kept, joined from an identical read in flight, or loaded now. The flag says
    /// whether this call's own `load` ran (a miss).
    pub async fn get_or_load<F>(
        &self,
        key: K,
        load: F,
    ) -> Result<(Arc<Loaded<V>>, bool), MountError>
    where
        F: Future<Output = Result<Loaded<V>, MountError>>,
    {
        self.get_or_load_shared(key, async { load.await.map(Arc::new) })
            .await
    }

    /// As [`ValueCache::get_or_load`], for a load whose value is already shared (one answer of a call
    /// that read several).
    pub async fn get_or_load_shared<F>(
        &self,
        key: K,
        load: F,
    ) -> Result<(Arc<Loaded<V>>, bool), MountError>
    where
        F: Future<Output = Result<Arc<Loaded<V>>, MountError>>,
    {
        let Some(cache) = &self.cache else {
            return load.await.map(|loaded| (loaded, true));
        };
        let mut loaded_here = false;
        let loaded = cache
            .try_get_with(key.clone(), async {
                loaded_here = true;
                load.await
            })
            .await
            .map_err(|e| (*e).clone())?;
        if !loaded.cacheable {
            cache.invalidate(&key).await;
        }
        Ok((loaded, loaded_here))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn read(loads: &AtomicUsize, cacheable: bool) -> Result<Loaded<u32>, MountError> {
        loads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(Loaded {
            value: 7,
            cacheable,
        })
    }

    #[tokio::test]
    async fn coalesces_concurrent_reads_and_keeps_them_for_the_ttl() {
        let cache = ValueCache::<&str, u32>::new(Duration::from_secs(60), 100, |_| 1);
        let loads = AtomicUsize::new(0);
        let results = futures_util::future::join_all(
            (0..20).map(|_| cache.get_or_load("k", read(&loads, true))),
        )
        .await;
        assert!(results.iter().all(|r| r.as_ref().unwrap().0.value == 7));
        assert_eq!(
            results.iter().filter(|r| r.as_ref().unwrap().1).count(),
            1,
            "one caller loaded"
        );
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        cache.get_or_load("k", read(&loads, true)).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 1, "kept");
        cache
            .get_or_load("other", read(&loads, true))
            .await
            .unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 2, "keys are separate");
    }

    #[tokio::test]
    async fn never_keeps_uncacheable_values_or_errors_and_can_be_off() {
        let cache = ValueCache::<&str, u32>::new(Duration::from_secs(60), 100, |_| 1);
        let loads = AtomicUsize::new(0);
        cache
            .get_or_load("lease", read(&loads, false))
            .await
            .unwrap();
        cache
            .get_or_load("lease", read(&loads, false))
            .await
            .unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        let failing = async {
            Err::<Loaded<u32>, _>(MountError::internal(
                crate::error::Reason::BackendBadAnswer,
                "boom",
            ))
        };
        assert!(cache.get_or_load("e", failing).await.is_err());
        cache.get_or_load("e", read(&loads, true)).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 3);
        let off = ValueCache::<&str, u32>::new(Duration::ZERO, 100, |_| 1);
        off.get_or_load("k", read(&loads, true)).await.unwrap();
        off.get_or_load("k", read(&loads, true)).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 5);
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[tokio::test]
    async fn values_larger_than_the_cache_are_not_kept() {
        let cache = ValueCache::<&str, Vec<u8>>::new(Duration::from_secs(60), 1000, Vec::len);
        let loads = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..2 {
            cache
                .get_or_load("big", async {
                    loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(Loaded {
                        value: vec![0; 5000],
                        cacheable: true,
                    })
                })
                .await
                .unwrap();
            if let Some(cache) = &cache.cache {
                cache.run_pending_tasks().await;
            }
        }
        assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
