//! List-then-watch of one kind of object, feeding the controller: the full list first, a page at a
//! time and each object pruned of what the controller never reads (it replaces what the controller
//! knew), then every change from that list's `resourceVersion` on. A watch that ends (the API server's
//! timeout) is resumed from the last version seen; a `410 Gone` (that version is no longer kept) makes
//! a fresh list. Failures back off from 1 s to 16 s and never end the loop; the controller hears when
//! it is interrupted and when it works again (its readiness).

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, ObjectList, PartialObjectMeta, WatchEvent, WatchParams};
use kube::{Api, Resource};
use tokio::sync::mpsc;

use crate::backend::BoxFuture;

/// What the controller hears about one kind of object.
#[derive(Debug)]
pub enum Change<K> {
    /// Every object there is now (after a start or a `410 Gone`).
    Listed(Vec<K>),
    Applied(K),
    Deleted(K),
    /// The list or watch is failing (it is retried); `Resumed` or `Listed` follows when it works again.
    Interrupted,
    /// A watch opened again after `Interrupted`.
    Resumed,
}

/// Seconds the API server is asked to keep one watch open.
const WATCH_SECONDS: u32 = 290;

/// Objects asked for per list request: a page at a time, so listing thousands of objects never holds
/// them all in their full form at once.
const PAGE: u32 = 500;

/// A list and a watch of one kind of object.
pub trait Lister<K: Clone>: Send + Sync {
    /// One page of the list (`continue_token` from the page before).
    fn list(&self, continue_token: Option<String>) -> BoxFuture<'_, kube::Result<ObjectList<K>>>;
    /// Drops what the controller never reads from an object, as it arrives.
    fn prune(&self, _object: &mut K) {}
    #[allow(clippy::type_complexity)]
    fn watch(
        &self,
        version: String,
    ) -> BoxFuture<'_, kube::Result<BoxStream<'static, kube::Result<WatchEvent<K>>>>>;
}

/// Whole objects, optionally filtered by labels, pruned by `prune`.
pub struct Objects<K> {
    pub api: Api<K>,
    pub labels: Option<String>,
    pub prune: fn(&mut K),
}

impl<K> Lister<K> for Objects<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    fn list(&self, continue_token: Option<String>) -> BoxFuture<'_, kube::Result<ObjectList<K>>> {
        Box::pin(async move {
            self.api
                .list(&list_params(&self.labels, continue_token))
                .await
        })
    }

    fn prune(&self, object: &mut K) {
        (self.prune)(object);
    }

    fn watch(
        &self,
        version: String,
    ) -> BoxFuture<'_, kube::Result<BoxStream<'static, kube::Result<WatchEvent<K>>>>> {
        Box::pin(async move {
            let stream = self
                .api
                .watch(&watch_params(&self.labels), &version)
                .await?;
            Ok(stream.boxed())
        })
    }
}

/// Secrets' metadata only (never their data), filtered by labels.
pub struct SecretMetadata {
    pub api: Api<Secret>,
    pub labels: String,
}

impl Lister<PartialObjectMeta<Secret>> for SecretMetadata {
    fn list(
        &self,
        continue_token: Option<String>,
    ) -> BoxFuture<'_, kube::Result<ObjectList<PartialObjectMeta<Secret>>>> {
        Box::pin(async move {
            self.api
                .list_metadata(&list_params(&Some(self.labels.clone()), continue_token))
                .await
        })
    }

    /// Only what ownership and drift need (annotations may hold a Secret's data, from `kubectl
    /// apply`'s last-applied-configuration).
    fn prune(&self, object: &mut PartialObjectMeta<Secret>) {
        let meta = &mut object.metadata;
        meta.annotations = None;
        meta.managed_fields = None;
        if let Some(labels) = meta.labels.as_mut() {
            labels.retain(|k, _| k.starts_with("openclaw.io/"));
        }
    }

    #[allow(clippy::type_complexity)]
    fn watch(
        &self,
        version: String,
    ) -> BoxFuture<
        '_,
        kube::Result<BoxStream<'static, kube::Result<WatchEvent<PartialObjectMeta<Secret>>>>>,
    > {
        Box::pin(async move {
            let stream = self
                .api
                .watch_metadata(&watch_params(&Some(self.labels.clone())), &version)
                .await?;
            Ok(stream.boxed())
        })
    }
}

fn list_params(labels: &Option<String>, continue_token: Option<String>) -> ListParams {
    let mut params = ListParams::default().limit(PAGE);
    if let Some(token) = continue_token {
        params = params.continue_token(&token);
    }
    match labels {
        Some(labels) => params.labels(labels),
        None => params,
    }
}

/// Every page of the list, each object pruned as it arrives, and the first page's `resourceVersion`
/// (to watch from).
async fn list_all<K, L>(source: &L) -> kube::Result<(Vec<K>, String)>
where
    K: Clone,
    L: Lister<K>,
{
    let mut items = Vec::new();
    let mut version = None;
    let mut token = None;
    loop {
        let page = source.list(token).await?;
        version.get_or_insert_with(|| page.metadata.resource_version.clone().unwrap_or_default());
        for mut item in page.items {
            source.prune(&mut item);
            items.push(item);
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok((items, version.unwrap_or_default()));
        }
    }
}

fn watch_params(labels: &Option<String>) -> WatchParams {
    let params = WatchParams::default().timeout(WATCH_SECONDS);
    match labels {
        Some(labels) => params.labels(labels),
        None => params,
    }
}

/// Lists and watches until the receiver is gone.
pub async fn run<K, L>(what: &'static str, source: L, changes: mpsc::Sender<Change<K>>)
where
    K: Resource + Clone + Send + 'static,
    L: Lister<K>,
{
    let mut failures = 0u32;
    'list: loop {
        let (items, mut version) = match list_all(&source).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(watch = what, error = %e, "listing failed");
                if !interrupted(&changes, &mut failures).await {
                    return;
                }
                continue;
            }
        };
        failures = 0;
        if changes.send(Change::Listed(items)).await.is_err() {
            return;
        }
        loop {
            let mut stream = match source.watch(version.clone()).await {
                Ok(stream) => stream,
                Err(e) if is_gone(&e) => continue 'list,
                Err(e) => {
                    tracing::warn!(watch = what, error = %e, "watching failed");
                    if !interrupted(&changes, &mut failures).await {
                        return;
                    }
                    continue;
                }
            };
            if failures > 0 {
                failures = 0;
                if changes.send(Change::Resumed).await.is_err() {
                    return;
                }
            }
            while let Some(event) = stream.next().await {
                let change = match event {
                    Ok(WatchEvent::Added(mut object)) | Ok(WatchEvent::Modified(mut object)) => {
                        source.prune(&mut object);
                        Change::Applied(object)
                    }
                    Ok(WatchEvent::Deleted(mut object)) => {
                        source.prune(&mut object);
                        Change::Deleted(object)
                    }
                    Ok(WatchEvent::Bookmark(bookmark)) => {
                        version = bookmark.metadata.resource_version;
                        continue;
                    }
                    Ok(WatchEvent::Error(status)) if status.code == 410 => {
                        tracing::info!(watch = what, "the watch's version is gone: listing again");
                        continue 'list;
                    }
                    Ok(WatchEvent::Error(status)) => {
                        tracing::warn!(watch = what, code = status.code, reason = %status.reason, "watch error");
                        if !interrupted(&changes, &mut failures).await {
                            return;
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(watch = what, error = %e, "the watch broke");
                        if !interrupted(&changes, &mut failures).await {
                            return;
                        }
                        break;
                    }
                };
                if let Some(seen) = object_version(&change) {
                    version = seen;
                }
                if changes.send(change).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Counts a failure, tells the controller at the first of a run, and backs off; false when the
/// controller is gone.
async fn interrupted<K>(changes: &mpsc::Sender<Change<K>>, failures: &mut u32) -> bool {
    *failures += 1;
    if *failures == 1 && changes.send(Change::Interrupted).await.is_err() {
        return false;
    }
    tokio::time::sleep(backoff(*failures)).await;
    true
}

fn object_version<K: Resource>(change: &Change<K>) -> Option<String> {
    match change {
        Change::Applied(object) | Change::Deleted(object) => object.meta().resource_version.clone(),
        _ => None,
    }
}

fn is_gone(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 410)
}

/// 1 s doubling to 16 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.clamp(1, 5).saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Serves `pages` in order, remembering the continue token each request carried.
    struct Pages {
        pages: Mutex<Vec<ObjectList<String>>>,
        tokens: Mutex<Vec<Option<String>>>,
    }

    fn page(items: &[&str], version: &str, next: Option<&str>) -> ObjectList<String> {
        serde_json::from_value(serde_json::json!({
            "metadata": {"resourceVersion": version, "continue": next.unwrap_or_default()},
            "items": items,
        }))
        .unwrap()
    }

    impl Lister<String> for Pages {
        fn list(&self, token: Option<String>) -> BoxFuture<'_, kube::Result<ObjectList<String>>> {
            self.tokens.lock().unwrap().push(token);
            let next = self.pages.lock().unwrap().remove(0);
            Box::pin(async move { Ok(next) })
        }

        fn prune(&self, object: &mut String) {
            object.make_ascii_uppercase();
        }

        fn watch(
            &self,
            _version: String,
        ) -> BoxFuture<'_, kube::Result<BoxStream<'static, kube::Result<WatchEvent<String>>>>>
        {
            unreachable!("list_all never watches")
        }
    }

    #[tokio::test]
    async fn a_list_follows_every_page_and_watches_from_the_first() {
        let pages = Pages {
            pages: Mutex::new(vec![
                page(&["a", "b"], "7", Some("t1")),
                page(&["c"], "9", Some("t2")),
                page(&["d"], "9", None),
            ]),
            tokens: Mutex::new(Vec::new()),
        };
        let (items, version) = list_all(&pages).await.unwrap();
        assert_eq!(items, ["A", "B", "C", "D"], "every page, each pruned");
        assert_eq!(version, "7");
        assert_eq!(
            *pages.tokens.lock().unwrap(),
            [None, Some("t1".to_string()), Some("t2".to_string())]
        );
    }
}
