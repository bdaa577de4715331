//! Step 2 of a sync: the target Secret. Who owns it decides whether it may be written (the controller
//! never adopts a Secret: one it may write carries `openclaw.io/managed=true` and, once written, its
//! SecretSync's name in `openclaw.io/sync`); server-side apply writes exactly the keys, labels and owner
//! reference the controller owns (field manager `openclaw-sync`), so another writer's keys in a `Merge`
//! target survive and a key dropped from the SecretSync disappears. Only the Secret's metadata is ever
//! read. The data's keyed hash ([`data_hash`]) tells whether anything changed.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use zeroize::Zeroizing;

use super::crd::{CreationPolicy, SecretSync};
use super::reconcile::{Context, Failure};
use crate::version_hmac::VersionKey;

/// The label on every Secret the controller may write (set by it, or by a `Merge` target's owner).
pub const MANAGED_LABEL: &str = "openclaw.io/managed";
/// The label naming the SecretSync that writes a Secret.
pub const SYNC_LABEL: &str = "openclaw.io/sync";
/// The field manager of the controller's Secret writes.
pub const FIELD_MANAGER: &str = "openclaw-sync";

/// The target's metadata: the watch's copy (Secrets the controller labelled), else read now.
pub async fn existing(
    ctx: &Context,
    namespace: &str,
    name: &str,
    watched: Option<std::sync::Arc<ObjectMeta>>,
) -> Result<Option<ObjectMeta>, Failure> {
    if let Some(meta) = watched {
        return Ok(Some((*meta).clone()));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    ctx.throttle().await;
    match api.get_metadata_opt(name).await {
        Ok(meta) => Ok(meta.map(|m| m.metadata)),
        Err(e) => Err(Failure::api("reading the target Secret's metadata", &e)),
    }
}

/// Whether the SecretSync may write the target (see the module doc).
pub fn check_ownership(
    policy: CreationPolicy,
    existing: Option<&ObjectMeta>,
    sync: &SecretSync,
    target_name: &str,
) -> Result<(), Failure> {
    let name = sync.metadata.name.as_deref().unwrap_or_default();
    let Some(meta) = existing else {
        return match policy {
            CreationPolicy::Merge => Err(Failure::spec(
                "TargetNotFound",
                format!(
                    "creationPolicy Merge writes into an existing Secret, and {target_name} does not exist"
                ),
            )),
            _ => Ok(()),
        };
    };
    if policy == CreationPolicy::None {
        return Ok(());
    }
    let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).cloned();
    let elsewhere = |why: String| {
        Err(Failure::spec(
            "TargetOwnedElsewhere",
            format!("Secret {target_name} {why}: the controller never takes over a Secret"),
        ))
    };
    if label(MANAGED_LABEL).as_deref() != Some("true") {
        let hint = if policy == CreationPolicy::Merge {
            format!(" (to let it merge keys in, label the Secret {MANAGED_LABEL}=true)")
        } else {
            String::new()
        };
        return elsewhere(format!(
            "exists without the label {MANAGED_LABEL}=true{hint}"
        ));
    }
    if let Some(other) = label(SYNC_LABEL).filter(|other| other != name) {
        let shown: String = other.chars().take(64).collect();
        return elsewhere(format!("is written by SecretSync {shown:?}"));
    }
    let own_uid = sync.metadata.uid.as_deref().unwrap_or_default();
    if policy != CreationPolicy::Merge
        && let Some(controller) = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.uid != own_uid)
    {
        return elsewhere(format!(
            "is controlled by {} {}",
            controller.kind, controller.name
        ));
    }
    Ok(())
}

/// Server-side-applies the SecretSync's keys, only onto the Secret at `checked` (the `resourceVersion`
/// whose ownership was checked; `None`: it did not exist); returns its `resourceVersion` afterwards.
pub async fn apply(
    ctx: &Context,
    sync: &SecretSync,
    policy: CreationPolicy,
    target_name: &str,
    data: &BTreeMap<String, Zeroizing<Vec<u8>>>,
    checked: Option<&str>,
) -> Result<String, Failure> {
    let name = sync.metadata.name.as_deref().unwrap_or_default();
    let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
    let encoded: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(key, value)| {
            let text = base64::engine::general_purpose::STANDARD.encode(value.as_slice());
            (key.clone(), serde_json::Value::String(text))
        })
        .collect();
    let mut secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": target_name,
            "namespace": namespace,
            "labels": {MANAGED_LABEL: "true", SYNC_LABEL: name},
        },
        "data": encoded,
    });
    if policy != CreationPolicy::Merge {
        secret["type"] = json!("Opaque");
    }
    if let Some(version) = checked {
        secret["metadata"]["resourceVersion"] = json!(version);
    }
    if policy == CreationPolicy::Owner {
        secret["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "openclaw.io/v1alpha1",
            "kind": "SecretSync",
            "name": name,
            "uid": sync.metadata.uid.as_deref().unwrap_or_default(),
            "controller": true,
        }]);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    ctx.throttle().await;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = api
        .patch(target_name, &params, &Patch::Apply(&secret))
        .await
        .map_err(|e| write_failure(&e));
    // The request body held the values: wipe the copy this code owns, and the answer's.
    wipe(&mut secret);
    let mut written = written?;
    for value in written.data.iter_mut().flat_map(|d| d.values_mut()) {
        zeroize::Zeroize::zeroize(&mut value.0);
    }
    ctx.wrote("secret");
    Ok(written.metadata.resource_version.unwrap_or_default())
}

/// A refused write: the API server or an admission policy refused it (an immutable type, a policy's
/// denial, missing RBAC), which retrying cannot change; other failures (409 after a change, 5xx)
/// back off.
fn write_failure(error: &kube::Error) -> Failure {
    let failure = Failure::api("writing the Secret", error);
    match error {
        kube::Error::Api(status) if matches!(status.code, 400 | 403 | 422) => Failure {
            reason: "WriteRefused",
            retry: super::reconcile::Retry::Poll,
            ..failure
        },
        _ => Failure {
            reason: "WriteFailed",
            ..failure
        },
    }
}

fn wipe(value: &mut serde_json::Value) {
    if let Some(data) = value.get_mut("data").and_then(|d| d.as_object_mut()) {
        for text in data.values_mut() {
            if let serde_json::Value::String(text) = text {
                zeroize::Zeroize::zeroize(text);
            }
        }
    }
}

/// Deletes the controller's Secret (`deletionPolicy: Delete`): only one this SecretSync wrote (its
/// label names it), only the one whose uid was checked.
pub async fn delete(
    ctx: &Context,
    sync: &SecretSync,
    target_name: &str,
    existing: &ObjectMeta,
) -> Result<bool, Failure> {
    let name = sync.metadata.name.as_deref().unwrap_or_default();
    let written_by = existing.labels.as_ref().and_then(|l| l.get(SYNC_LABEL));
    if written_by.map(String::as_str) != Some(name) {
        return Ok(false);
    }
    let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    ctx.throttle().await;
    match api.delete(target_name, &params).await {
        Ok(_) => {
            ctx.wrote("delete");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(true),
        Err(e) => Err(Failure::api("deleting the Secret", &e)),
    }
}

/// `v1:<key id>:` and the HMAC-SHA256, under the controller's key, of the Secret's identity
/// (namespace, name, the SecretSync's uid) and its keys and values. Keyed, so it says nothing about a
/// value to anyone without the key; it changes when any key or value does. The key id (an HMAC of a
/// constant) tells a hash made under another key ([`same_key`]).
pub fn data_hash(
    key: &VersionKey,
    sync: &SecretSync,
    target_name: &str,
    data: &BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> String {
    let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
    let uid = sync.metadata.uid.as_deref().unwrap_or_default();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(4 + 2 * data.len());
    parts.extend([
        b"openclaw-sync-data".as_slice(),
        namespace.as_bytes(),
        target_name.as_bytes(),
        uid.as_bytes(),
    ]);
    for (name, value) in data {
        parts.push(name.as_bytes());
        parts.push(value.as_slice());
    }
    let key_id: String = key
        .version(&[b"openclaw-sync-key-id"])
        .chars()
        .take(8)
        .collect();
    format!("v1:{key_id}:{}", key.version(&parts))
}

/// Whether two data hashes were made under the same key.
pub fn same_key(one: &str, other: &str) -> bool {
    let key_id = |hash: &str| hash.rsplit_once(':').map(|(prefix, _)| prefix.to_string());
    key_id(one).is_some() && key_id(one) == key_id(other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn sync(uid: &str) -> SecretSync {
        let mut sync: SecretSync = serde_saphyr::from_str(
            "apiVersion: openclaw.io/v1alpha1\nkind: SecretSync\nmetadata: {name: keys, namespace: n}\n\
             spec: {secretProviderClassName: spc, serviceAccountName: sa}\n",
        )
        .unwrap();
        sync.metadata.uid = Some(uid.into());
        sync
    }

    fn meta(labels: &[(&str, &str)], controller: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: controller.map(|uid| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "other".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_controller_never_takes_over_a_secret() {
        use CreationPolicy::{Merge, Orphan, Owner};
        let own = sync("u-1");
        let ours = meta(
            &[(MANAGED_LABEL, "true"), (SYNC_LABEL, "keys")],
            Some("u-1"),
        );
        for policy in [Owner, Orphan, Merge] {
            assert!(check_ownership(policy, Some(&ours), &own, "t").is_ok());
        }
        assert!(check_ownership(Owner, None, &own, "t").is_ok());
        assert_eq!(
            check_ownership(Merge, None, &own, "t").unwrap_err().reason,
            "TargetNotFound"
        );
        let refused = [
            (Owner, meta(&[], None)),
            (Merge, meta(&[("app", "x")], None)),
            (Owner, meta(&[(MANAGED_LABEL, "false")], None)),
            (
                Orphan,
                meta(&[(MANAGED_LABEL, "true"), (SYNC_LABEL, "other")], None),
            ),
            (
                Merge,
                meta(&[(MANAGED_LABEL, "true"), (SYNC_LABEL, "other")], None),
            ),
            (Owner, meta(&[(MANAGED_LABEL, "true")], Some("u-2"))),
        ];
        for (policy, meta) in refused {
            let error = check_ownership(policy, Some(&meta), &own, "t").unwrap_err();
            assert_eq!(error.reason, "TargetOwnedElsewhere", "{policy:?} {meta:?}");
        }
        // A Merge target may have its own controller: only its keys are written.
        let merged = meta(&[(MANAGED_LABEL, "true")], Some("u-2"));
        assert!(check_ownership(Merge, Some(&merged), &own, "t").is_ok());
        assert!(check_ownership(CreationPolicy::None, Some(&meta(&[], None)), &own, "t").is_ok());
    }

    #[test]
    fn the_hash_is_keyed_and_covers_keys_values_and_identity() {
        let key = VersionKey::random().unwrap();
        let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, Zeroizing<Vec<u8>>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Zeroizing::new(v.as_bytes().to_vec())))
                .collect()
        };
        let one = data(&[("A", "secret")]);
        let hash = data_hash(&key, &sync("u-1"), "t", &one);
        assert!(hash.starts_with("v1:"));
        assert!(!hash.contains("secret"));
        assert_eq!(hash, data_hash(&key, &sync("u-1"), "t", &one));
        let rekeyed = data_hash(&VersionKey::random().unwrap(), &sync("u-1"), "t", &one);
        assert!(!same_key(&hash, &rekeyed));
        assert!(same_key(&hash, &data_hash(&key, &sync("u-2"), "t", &one)));
        for other in [
            data_hash(&key, &sync("u-1"), "t", &data(&[("A", "secreT")])),
            data_hash(&key, &sync("u-1"), "t", &data(&[("B", "secret")])),
            data_hash(&key, &sync("u-2"), "t", &one),
            data_hash(&key, &sync("u-1"), "t2", &one),
            data_hash(&VersionKey::random().unwrap(), &sync("u-1"), "t", &one),
        ] {
            assert_ne!(hash, other);
        }
    }
}
