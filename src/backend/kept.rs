//! Credentials kept per principal until shortly before they expire (AWS sessions, GCP access tokens),
//! one load at a time per principal. The backends check the pod's token before every lookup
//! ([`crate::pod_token`]), so kept credentials are only handed to a pod that presented its service
//! account's own token.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::error::MountResult;

/// No credentials are kept longer than this, fresh or not.
const LONGEST: Duration = Duration::from_secs(12 * 3600);

/// Credentials that know when they are due to be fetched anew.
pub trait Expiring {
    fn is_fresh(&self) -> bool;
}

/// Kept credentials by principal.
pub struct Kept<K, V> {
    cache: moka::future::Cache<K, Arc<V>>,
}

impl<K, V> Kept<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Expiring + Send + Sync + 'static,
{
    pub fn new(capacity: u64) -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .time_to_live(LONGEST)
                .max_capacity(capacity.max(1))
                .build(),
        }
    }

    /// The principal's credentials: kept and fresh, or loaded now.
    pub async fn get(
        &self,
        principal: &K,
        load: impl Future<Output = MountResult<V>>,
    ) -> MountResult<Arc<V>> {
        if let Some(kept) = self.cache.get(principal).await {
            if kept.is_fresh() {
                return Ok(kept);
            }
            self.cache.invalidate(principal).await;
        }
        self.cache
            .try_get_with(principal.clone(), async { load.await.map(Arc::new) })
            .await
            .map_err(|e| (*e).clone())
    }

    /// Drops the principal's credentials (the backend refused them).
    pub async fn forget(&self, principal: &K) {
        self.cache.invalidate(principal).await;
    }
}
