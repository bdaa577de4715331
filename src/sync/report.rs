//! Step 4 of a sync: tell the user. The `Ready` condition (reason `SecretSynced` or why not), the status
//! written only when it changed (a poll that finds nothing new writes nothing), and events on the
//! SecretSync (`Synced`, `Updated`, `Deleted`, `SyncFailed`, `RolloutTriggered`, `RolloutFailed`). Every
//! message is the controller's own text: names, keys and causes, never a value.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

use super::crd::{SecretSync, SecretSyncStatus};
use super::reconcile::{Context, Failure};

/// The `Ready` reason of a synced SecretSync.
pub const SYNCED: &str = "SecretSynced";
pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";
/// The component named in events.
pub const COMPONENT: &str = "openclaw-sync";
/// Longest event or condition message.
const MAX_MESSAGE: usize = 1024;

/// The conditions with `Ready` set (its transition time kept when its status did not change).
pub fn ready(
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
) -> Vec<Condition> {
    let status = if ok { "True" } else { "False" };
    let before = previous.iter().find(|c| c.type_ == "Ready");
    let since = match before {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    let mut conditions: Vec<Condition> = previous
        .iter()
        .filter(|c| c.type_ != "Ready")
        .cloned()
        .collect();
    conditions.push(Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: cut(message),
        observed_generation: generation,
        last_transition_time: since,
    });
    conditions
}

/// Writes `new` when it differs from `old` (apart from `refreshTime`, then set from `interval`); returns
/// the status as it now is.
pub async fn write_status(
    ctx: &Context,
    sync: &SecretSync,
    old: &SecretSyncStatus,
    mut new: SecretSyncStatus,
    interval: Option<Duration>,
) -> Result<SecretSyncStatus, Failure> {
    new.refresh_time.clone_from(&old.refresh_time);
    if &new == old {
        return Ok(new);
    }
    new.refresh_time = interval
        .and_then(|i| SignedDuration::try_from(i).ok())
        .and_then(|i| Timestamp::now().checked_add(i).ok())
        .map(Time);
    let mut patch = serde_json::to_value(&new).unwrap_or_default();
    // A merge patch keeps fields it does not name: name the ones to clear.
    if let (Some(patch), Ok(serde_json::Value::Object(old))) =
        (patch.as_object_mut(), serde_json::to_value(old))
    {
        for field in old.keys() {
            patch
                .entry(field.clone())
                .or_insert(serde_json::Value::Null);
        }
    }
    let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
    let name = sync.metadata.name.as_deref().unwrap_or_default();
    let api: Api<SecretSync> = Api::namespaced(ctx.client.clone(), namespace);
    ctx.throttle().await;
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": patch })),
    )
    .await
    .map_err(|e| Failure::api("writing the SecretSync status", &e))?;
    ctx.wrote("status");
    Ok(new)
}

/// Posts an event on the SecretSync (failures are logged: an event is never worth failing a sync).
pub async fn event(ctx: &Context, sync: &SecretSync, kind: &str, reason: &str, message: &str) {
    let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
    let name = sync.metadata.name.as_deref().unwrap_or_default();
    let now = Time(Timestamp::now());
    let mut unique = [0u8; 8];
    let _ = getrandom::fill(&mut unique);
    let suffix: String = unique.iter().map(|b| format!("{b:02x}")).collect();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{suffix}", cut_to(name, 200))),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("openclaw.io/v1alpha1".into()),
            kind: Some("SecretSync".into()),
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            uid: sync.metadata.uid.clone(),
            resource_version: sync.metadata.resource_version.clone(),
            field_path: None,
        },
        reason: Some(reason.to_string()),
        message: Some(cut(message)),
        type_: Some(kind.to_string()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(ctx.settings.instance.clone()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), namespace);
    ctx.throttle().await;
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => ctx.wrote("event"),
        Err(e) => tracing::warn!(reason, error = %e, "posting an event failed"),
    }
}

fn cut_to(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

fn cut(message: &str) -> String {
    message.chars().take(MAX_MESSAGE).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_keeps_its_transition_time_while_its_status_holds() {
        let first = ready(true, SYNCED, "3 keys", Some(1), &[]);
        let again = ready(true, SYNCED, "3 keys", Some(2), &first);
        assert_eq!(first[0].last_transition_time, again[0].last_transition_time);
        assert_eq!(again.len(), 1);
        let failed = ready(false, "BackendUnavailable", "down", Some(2), &again);
        assert_eq!(failed[0].status, "False");
        assert_eq!(failed[0].reason, "BackendUnavailable");
        assert_eq!(cut(&"x".repeat(5000)).len(), MAX_MESSAGE);
    }
}
