//! One SecretSync, once: check the target Secret may be written, fetch ([`super::source`]), apply the
//! deletion policy, write the Secret only when its keyed hash or its `resourceVersion` says it changed
//! ([`super::target`]), restart the workloads once the debounce has passed ([`super::rollout`]), and
//! report ([`super::report`]: status only when it changed, events). Failures leave the Secret as it was.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::crd::{
    CreationPolicy, DeletionPolicy, MAX_DATA, MAX_ROLLOUT_TARGETS, SecretSync, SecretSyncStatus,
};
use super::source::Endpoint;
use super::{report, rollout, source, target};
use crate::backend::Backends;
use crate::error::{ErrorKind, MountError, Reason};
use crate::kubernetes::Kubernetes;
use crate::telemetry::metrics::{Metrics, SyncMetrics};
use crate::version_hmac::VersionKey;

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub kubernetes: Arc<Kubernetes>,
    pub backends: Backends,
    pub versions: Arc<VersionKey>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
}

/// The controller's settings that reconciles use.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest one fetch may take.
    pub mount_timeout: Duration,
    /// How long after a data change the workloads are restarted.
    pub debounce: Duration,
    /// Shortest refresh interval honoured.
    pub min_interval: Duration,
    /// This replica's name, in events.
    pub instance: String,
    /// The Secret holding the hash key (namespace, name), which no SecretSync may write.
    pub key_secret: Option<(String, String)>,
}

impl Context {
    /// Waits for the Kubernetes API rate limit.
    pub async fn throttle(&self) {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let _ = self.kubernetes.turn(far).await;
    }

    pub fn sync_metrics(&self) -> Option<&SyncMetrics> {
        self.metrics.sync.as_ref()
    }

    /// Counts one API write.
    pub fn wrote(&self, kind: &'static str) {
        if let Some(metrics) = self.sync_metrics() {
            metrics.record_write(kind);
        }
    }
}

/// Why a reconcile failed: the Ready condition's reason and message (never a value), and when to retry.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
    pub retry: Retry,
}

/// When a failed SecretSync is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Soon, backing off (the cause may pass: the backend or the API is down).
    Backoff,
    /// At the next regular poll or when the SecretSync changes (retrying sooner changes nothing).
    Poll,
    /// The endpoint throttles: when its throttle window ends (it holds the namespace's SecretSyncs
    /// reading from it), or the SecretSync's own backoff, whichever is later.
    Throttled(Endpoint),
}

impl Failure {
    /// A problem with the spec or the objects it names: fixed by editing, not by retrying.
    pub fn spec(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            retry: Retry::Poll,
        }
    }

    /// A Kubernetes API call failed: its code and reason only (API messages can quote what was sent).
    pub fn api(what: &str, error: &kube::Error) -> Self {
        let message = match error {
            kube::Error::Api(status) => {
                format!(
                    "the Kubernetes API answered {} {} {what}",
                    status.code, status.reason
                )
            }
            other => format!(
                "the Kubernetes API could not be reached {what}: {}",
                crate::error::first_line(&other.to_string())
            ),
        };
        Self {
            reason: "KubernetesApiError",
            message,
            retry: Retry::Backoff,
        }
    }

    /// A fetch from `endpoint` failed: [`Failure::from_mount`], throttling held for the whole endpoint.
    pub fn from_backend(endpoint: &Endpoint, error: MountError) -> Self {
        let failure = Self::from_mount(error);
        match failure.reason {
            "BackendThrottled" => Self {
                retry: Retry::Throttled(endpoint.clone()),
                ..failure
            },
            _ => failure,
        }
    }

    /// A fetch failed (the backend's message names objects and causes, never values). Failures only an
    /// edit fixes (the spec, the SecretProviderClass, a missing service account, answers too large)
    /// wait for the next poll or a change; the others back off.
    pub fn from_mount(error: MountError) -> Self {
        let (reason, retry) = match (error.reason, error.kind) {
            (Reason::BackendThrottled, _) => ("BackendThrottled", Retry::Backoff),
            (Reason::KubernetesObjectNotFound, _) => ("ServiceAccountNotFound", Retry::Poll),
            (Reason::TokenAudienceNotAllowed, _) => ("AudienceNotAllowed", Retry::Poll),
            (
                Reason::ResponseTooLarge
                | Reason::AnswersTooLarge
                | Reason::VaultAnswerTooLarge
                | Reason::TooManyObjects,
                _,
            ) => ("SourceTooLarge", Retry::Poll),
            (_, ErrorKind::InvalidArgument) => ("InvalidSpec", Retry::Poll),
            (_, ErrorKind::NotFound) => ("SourceNotFound", Retry::Backoff),
            (_, ErrorKind::PermissionDenied | ErrorKind::Unauthenticated) => {
                ("BackendDenied", Retry::Backoff)
            }
            (_, ErrorKind::ResourceExhausted) => ("SourceTooLarge", Retry::Poll),
            (_, ErrorKind::Unavailable | ErrorKind::DeadlineExceeded) => {
                ("BackendUnavailable", Retry::Backoff)
            }
            (_, ErrorKind::FailedPrecondition | ErrorKind::DataLoss | ErrorKind::Internal) => {
                ("FetchFailed", Retry::Backoff)
            }
        };
        Self {
            reason,
            message: format!("{}: {}", error.reason.as_str(), error.message),
            retry,
        }
    }
}

/// What one reconcile is given.
pub struct Input {
    pub sync: Arc<SecretSync>,
    /// The target Secret's metadata, when the controller's watch has it (a Secret it labelled).
    pub secret: Option<Arc<ObjectMeta>>,
    /// Read past the value cache (force-sync).
    pub force: bool,
    /// The last warning event posted for this SecretSync (the same failure is not posted again).
    pub last_warning: Option<String>,
}

/// What one reconcile did.
#[derive(Debug)]
pub struct Outcome {
    /// `synced` (the Secret was written), `unchanged` or `failed`.
    pub result: &'static str,
    pub next: Next,
    pub ready: bool,
    /// The Secret's `resourceVersion` after this reconcile's write.
    pub written_version: Option<String>,
    pub last_warning: Option<String>,
    /// The status as this reconcile left it (the watch brings it later).
    pub status: Option<SecretSyncStatus>,
    /// Where the SecretSync reads from, when the reconcile got as far as asking.
    pub backend: Option<Endpoint>,
}

/// When the SecretSync is due again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// At its refresh interval (never for `0`).
    Poll,
    /// Soon, backing off.
    Backoff,
    /// After this long (a debounced rollout).
    After(Duration),
    /// When the backend's throttle window ends.
    Throttled,
}

/// Reconciles one SecretSync.
pub async fn reconcile(ctx: &Context, input: Input) -> Outcome {
    let started = std::time::Instant::now();
    let outcome = match sync_once(ctx, &input).await {
        Ok(outcome) => outcome,
        Err(failure) => failed(ctx, &input, failure).await,
    };
    if let Some(metrics) = ctx.sync_metrics() {
        metrics.record_reconcile(outcome.result, started.elapsed().as_secs_f64());
    }
    outcome
}

async fn sync_once(ctx: &Context, input: &Input) -> Result<Outcome, Failure> {
    let sync = &input.sync;
    let spec = &sync.spec;
    let name = sync.metadata.name.as_deref().unwrap_or_default();
    let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
    let old = sync.status.clone().unwrap_or_default();
    let interval = refresh_of(sync, ctx.settings.min_interval)?;
    let policy = spec.creation_policy();
    let target_name = spec.target_name(name);
    check_spec(sync, target_name)?;
    if ctx.settings.key_secret.as_ref() == Some(&(namespace.to_string(), target_name.to_string())) {
        return Err(Failure::spec(
            "TargetOwnedElsewhere",
            format!("Secret {target_name} holds the sync controller's hash key"),
        ));
    }
    let existing = match policy {
        CreationPolicy::None => None,
        _ => target::existing(ctx, namespace, target_name, input.secret.clone()).await?,
    };
    target::check_ownership(policy, existing.as_ref(), sync, target_name)?;
    let live_version = existing.as_ref().and_then(|m| m.resource_version.clone());
    let drifted = policy != CreationPolicy::None
        && (live_version.is_none() || live_version != old.target_resource_version);
    // A spec edit (policy, target, keys) is applied even when the data is the same.
    let respec = old.observed_generation != sync.metadata.generation;
    let settled = !input.force && !drifted && !respec && is_settled(&old);
    let synced = settled.then(|| source::Synced {
        versions: &old.object_versions,
        provider_class_version: old.provider_class_version.as_deref(),
    });
    let fetched = source::fetch(ctx, sync, input.force, synced).await?;
    let backend = fetched.backend.clone();
    if fetched.unchanged {
        // The backend's versions are the synced ones: nothing was read, nothing is written.
        return Ok(Outcome {
            result: "unchanged",
            next: Next::Poll,
            ready: true,
            written_version: None,
            last_warning: None,
            status: None,
            backend: Some(backend),
        });
    }
    let mut status = old.clone();
    status.object_versions = fetched.versions;
    status.provider_class_version = Some(fetched.provider_class_version.clone());
    status.observed_generation = sync.metadata.generation;
    if !fetched.gone.is_empty() {
        match spec.deletion_policy() {
            DeletionPolicy::Retain => {
                return Err(Failure::spec(
                    "SourceNotFound",
                    format!(
                        "the backend no longer has the objects of keys {}: the Secret keeps its last \
                         data (deletionPolicy Retain)",
                        fetched.gone.join(", ")
                    ),
                ));
            }
            // The Secret goes once every object is gone; until then the gone keys go, as with Merge.
            DeletionPolicy::Delete if fetched.data.is_empty() => {
                let gone = Gone {
                    keys: &fetched.gone,
                    backend,
                };
                return deleted(ctx, input, status, existing, target_name, gone).await;
            }
            DeletionPolicy::Delete | DeletionPolicy::Merge => {}
        }
    }
    let data = fetched.data;
    let hash = target::data_hash(&ctx.versions, sync, target_name, &data);
    let change = Change::of(&old, &hash, &status.object_versions);
    let changed = change != Change::None;
    let mut result = if changed { "synced" } else { "unchanged" };
    let mut written_version = None;
    if policy != CreationPolicy::None && (changed || drifted || respec) {
        // Checked again just before the write, which is conditional on what was checked: the fetch
        // may have taken long, and the Secret may have changed hands meanwhile.
        let fresh = target::existing(ctx, namespace, target_name, None).await?;
        target::check_ownership(policy, fresh.as_ref(), sync, target_name)?;
        let checked = fresh.as_ref().and_then(|m| m.resource_version.as_deref());
        let version = target::apply(ctx, sync, policy, target_name, &data, checked).await?;
        result = "synced";
        let why = match change {
            Change::First => Change::First.describe(),
            _ if respec => "the SecretSync changed",
            Change::None => "the Secret was changed or deleted outside the controller",
            other => other.describe(),
        };
        let reason = if change == Change::First {
            "Synced"
        } else {
            "Updated"
        };
        let message = format!("{why}: wrote {} keys to Secret {target_name}", data.len());
        report::event(ctx, sync, report::NORMAL, reason, &message).await;
        status.target_resource_version = Some(version.clone());
        written_version = Some(version);
    }
    if changed {
        status.synced_hash = Some(hash.clone());
        if change != Change::Rekeyed {
            status.last_sync_time = Some(Time(Timestamp::now()));
        }
    }
    // Only new data restarts workloads: not the first write, not a status-only sync, not a new key.
    let rolled_out = old.rolled_out_hash == old.synced_hash;
    if change == Change::First
        || policy == CreationPolicy::None
        || (change == Change::Rekeyed && rolled_out)
    {
        status.rolled_out_hash = Some(hash.clone());
    }
    let next = rollout_if_due(ctx, sync, target_name, &hash, &mut status).await?;
    let mut message = if policy == CreationPolicy::None {
        format!(
            "{} keys fetched (creationPolicy None: no Secret is written)",
            data.len()
        )
    } else {
        format!("{} keys in Secret {target_name}", data.len())
    };
    if !fetched.gone.is_empty() {
        message.push_str(&format!(
            "; removed {}: their objects are gone (deletionPolicy {:?})",
            fetched.gone.join(", "),
            spec.deletion_policy()
        ));
    }
    status.conditions = report::ready(
        true,
        report::SYNCED,
        &message,
        sync.metadata.generation,
        &old.conditions,
    );
    let status = report::write_status(ctx, sync, &old, status, interval).await?;
    Ok(Outcome {
        result,
        next,
        ready: true,
        written_version,
        last_warning: None,
        status: Some(status),
        backend: Some(backend),
    })
}

/// Whether the last sync left nothing pending (synced and Ready, its workloads rolled): only then may a
/// poll settle for the backend's versions alone.
fn is_settled(old: &SecretSyncStatus) -> bool {
    let ready = old
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == report::SYNCED);
    ready && old.synced_hash.is_some() && old.rolled_out_hash == old.synced_hash
}

/// The refresh interval, raised to the floor; a spec error when it does not parse.
pub fn refresh_of(sync: &SecretSync, floor: Duration) -> Result<Option<Duration>, Failure> {
    let interval = sync
        .spec
        .refresh()
        .map_err(|message| Failure::spec("InvalidSpec", message))?;
    Ok(interval.map(|i| i.max(floor)))
}

/// Checks what the API server's schema checks too (names end up in API paths: never trust that an old
/// CRD checked them).
fn check_spec(sync: &SecretSync, target_name: &str) -> Result<(), Failure> {
    let spec = &sync.spec;
    let mut names = vec![
        ("spec.target.name", target_name),
        (
            "spec.secretProviderClassName",
            spec.secret_provider_class_name.as_str(),
        ),
        (
            "spec.serviceAccountName",
            spec.service_account_name.as_str(),
        ),
    ];
    for target in spec.rollout.iter().flat_map(|r| r.targets.iter()) {
        names.push(("spec.rollout.targets[].name", target.name.as_str()));
    }
    for (field, name) in names {
        if !is_dns_subdomain(name) {
            let shown: String = name.chars().take(64).collect();
            return Err(Failure::spec(
                "InvalidSpec",
                format!("{field} {shown:?} is not a Kubernetes object name"),
            ));
        }
    }
    // The SecretSync's name becomes the value of the label `openclaw.io/sync` on its Secret.
    let name = sync.metadata.name.as_deref().unwrap_or_default();
    if name.len() > 63 {
        return Err(Failure::spec(
            "InvalidSpec",
            "a SecretSync's name must be at most 63 characters: it is the value of the label openclaw.io/sync",
        ));
    }
    let listed = [
        ("spec.data", spec.data.len(), MAX_DATA),
        (
            "spec.rollout.targets",
            spec.rollout.as_ref().map_or(0, |r| r.targets.len()),
            MAX_ROLLOUT_TARGETS,
        ),
    ];
    for (field, count, most) in listed {
        if count > most {
            return Err(Failure::spec(
                "InvalidSpec",
                format!("{field} lists {count} entries; at most {most}"),
            ));
        }
    }
    if sync.spec.deletion_policy() == DeletionPolicy::Delete
        && sync.spec.creation_policy() != CreationPolicy::Owner
    {
        return Err(Failure::spec(
            "InvalidSpec",
            "deletionPolicy Delete needs creationPolicy Owner",
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain (what Secret and workload names must be).
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// How the data compares with what status says was synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Never synced before.
    First,
    /// The same data.
    None,
    /// New data.
    Data,
    /// The hash key changed (a key Secret or file replaced), and the backend's object versions did
    /// not: the same data under a new hash.
    Rekeyed,
}

impl Change {
    fn of(
        old: &SecretSyncStatus,
        hash: &str,
        versions: &[super::crd::SyncedObjectVersion],
    ) -> Self {
        match old.synced_hash.as_deref() {
            None => Self::First,
            Some(synced) if synced == hash => Self::None,
            Some(synced) if !target::same_key(synced, hash) && old.object_versions == versions => {
                Self::Rekeyed
            }
            Some(_) => Self::Data,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::First => "first sync",
            Self::None => "nothing changed",
            Self::Data => "the backend's data changed",
            Self::Rekeyed => "the hash key changed (the data did not)",
        }
    }
}

/// Restarts the workloads once the data has been stable for the debounce; otherwise says when to look
/// again.
async fn rollout_if_due(
    ctx: &Context,
    sync: &SecretSync,
    target_name: &str,
    hash: &str,
    status: &mut SecretSyncStatus,
) -> Result<Next, Failure> {
    if status.rolled_out_hash.as_deref() == Some(hash) {
        return Ok(Next::Poll);
    }
    let changed_at = status
        .last_sync_time
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    let since = Timestamp::now().duration_since(changed_at).unsigned_abs();
    if since < ctx.settings.debounce {
        return Ok(Next::After(ctx.settings.debounce - since));
    }
    rollout::restart_all(ctx, sync, target_name, hash).await?;
    status.rolled_out_hash = Some(hash.to_string());
    Ok(Next::Poll)
}

/// The keys whose objects a backend says are gone.
struct Gone<'a> {
    keys: &'a [String],
    backend: Endpoint,
}

/// `deletionPolicy: Delete` with objects gone: the Secret goes (it is the controller's, checked).
async fn deleted(
    ctx: &Context,
    input: &Input,
    mut status: SecretSyncStatus,
    existing: Option<ObjectMeta>,
    target_name: &str,
    gone: Gone<'_>,
) -> Result<Outcome, Failure> {
    let sync = &input.sync;
    let old = sync.status.clone().unwrap_or_default();
    let message = format!(
        "the backend no longer has the objects of keys {}: Secret {target_name} deleted (deletionPolicy Delete)",
        gone.keys.join(", ")
    );
    if existing.is_some() {
        // Read again, as before a write: the fetch may have taken long.
        let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
        let fresh = target::existing(ctx, namespace, target_name, None).await?;
        let deleted = match &fresh {
            Some(fresh) => target::delete(ctx, sync, target_name, fresh).await?,
            None => false,
        };
        if deleted {
            report::event(ctx, sync, report::NORMAL, "Deleted", &message).await;
        } else if fresh.is_some() {
            return Err(Failure::spec(
                "SourceNotFound",
                format!(
                    "the backend no longer has the objects of keys {}: Secret {target_name} was not \
                     written by this SecretSync and is left alone (deletionPolicy Delete)",
                    gone.keys.join(", ")
                ),
            ));
        }
    }
    status.synced_hash = None;
    status.rolled_out_hash = None;
    status.target_resource_version = None;
    status.conditions = report::ready(
        false,
        "SecretDeleted",
        &message,
        sync.metadata.generation,
        &old.conditions,
    );
    let interval = refresh_of(sync, ctx.settings.min_interval)?;
    let status = report::write_status(ctx, sync, &old, status, interval).await?;
    Ok(Outcome {
        result: "synced",
        next: Next::Poll,
        ready: false,
        written_version: None,
        last_warning: None,
        status: Some(status),
        backend: Some(gone.backend),
    })
}

/// A failed reconcile: Ready=False with the reason, one warning event per distinct failure.
async fn failed(ctx: &Context, input: &Input, failure: Failure) -> Outcome {
    let sync = &input.sync;
    tracing::warn!(
        namespace = sync.metadata.namespace.as_deref().unwrap_or_default(),
        name = sync.metadata.name.as_deref().unwrap_or_default(),
        reason = failure.reason,
        error = %failure.message,
        "sync failed"
    );
    let old = sync.status.clone().unwrap_or_default();
    let mut status = old.clone();
    // observedGeneration stays at the last synced spec, so an edit that failed is applied once it
    // works (the condition carries the generation it judged).
    status.conditions = report::ready(
        false,
        failure.reason,
        &failure.message,
        sync.metadata.generation,
        &old.conditions,
    );
    let interval = refresh_of(sync, ctx.settings.min_interval).unwrap_or(None);
    let status = match report::write_status(ctx, sync, &old, status, interval).await {
        Ok(status) => Some(status),
        Err(e) => {
            tracing::warn!(error = %e.message, "writing the SecretSync status failed");
            None
        }
    };
    let warning = format!("{}: {}", failure.reason, failure.message);
    if input.last_warning.as_deref() != Some(warning.as_str()) {
        report::event(ctx, sync, report::WARNING, "SyncFailed", &failure.message).await;
    }
    Outcome {
        result: "failed",
        next: match &failure.retry {
            Retry::Backoff => Next::Backoff,
            Retry::Poll => Next::Poll,
            Retry::Throttled(_) => Next::Throttled,
        },
        ready: false,
        written_version: None,
        last_warning: Some(warning),
        status,
        backend: match failure.retry {
            Retry::Throttled(endpoint) => Some(endpoint),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_failures() {
        assert!(is_dns_subdomain("openclaw-secrets"));
        assert!(is_dns_subdomain("a.b-c"));
        for bad in ["", "A", "-a", "a-", "a..b", "a/b", &"a".repeat(254)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        let throttled = Failure::from_mount(MountError::new(
            ErrorKind::ResourceExhausted,
            crate::error::Reason::BackendThrottled,
            "slow down",
        ));
        assert_eq!(throttled.reason, "BackendThrottled");
        assert_eq!(throttled.retry, Retry::Backoff);
        assert!(throttled.message.starts_with("BackendThrottled: "));
        let invalid = Failure::from_mount(MountError::invalid(
            crate::error::Reason::InvalidParameter,
            "bad",
        ));
        assert_eq!(invalid.retry, Retry::Poll);
        // Only an edit fixes these: no backoff loop, and a reason that says what to fix.
        let no_account = Failure::from_mount(MountError::new(
            ErrorKind::FailedPrecondition,
            Reason::KubernetesObjectNotFound,
            "service account openclaw/nobody does not exist",
        ));
        assert_eq!(
            (no_account.reason, no_account.retry),
            ("ServiceAccountNotFound", Retry::Poll)
        );
        let large = Failure::from_mount(MountError::exhausted(Reason::AnswersTooLarge, "big"));
        assert_eq!((large.reason, large.retry), ("SourceTooLarge", Retry::Poll));
        let down = Failure::from_mount(MountError::new(
            ErrorKind::Unavailable,
            Reason::VaultUnreachable,
            "no route",
        ));
        assert_eq!(
            (down.reason, down.retry),
            ("BackendUnavailable", Retry::Backoff)
        );
    }
}
