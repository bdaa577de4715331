//! Step 3 of a sync: restart what uses the Secret once its data changed. Each workload's pod template
//! gets the annotation `openclaw.io/secret-version: <the data's keyed hash>` by server-side apply (field
//! manager `openclaw-rollout`, so GitOps tools can be told to ignore that one field); the workload's own
//! strategy rolls the pods. A workload already carrying the hash is left alone, so a rollout a new
//! leader repeats restarts nothing twice.
//!
//! Which workloads: `spec.rollout.targets`, plus every Deployment, StatefulSet and DaemonSet in the
//! namespace that asks Reloader for it — `reloader.stakater.com/auto` or `secret.reloader.stakater.com/auto`
//! = `"true"` and a reference to the Secret in its pod template (env, envFrom, volumes, projected), or
//! the Secret's name in `secret.reloader.stakater.com/reload`.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::crd::{RolloutKind, SecretSync};
use super::reconcile::{Context, Failure};
use super::report;

/// The pod-template annotation a rollout sets.
pub const VERSION_ANNOTATION: &str = "openclaw.io/secret-version";
/// The field manager of rollout writes.
pub const FIELD_MANAGER: &str = "openclaw-rollout";

/// Restarts every workload of the SecretSync (see the module doc) that does not carry `hash` yet.
pub async fn restart_all(
    ctx: &Context,
    sync: &SecretSync,
    secret: &str,
    hash: &str,
) -> Result<(), Failure> {
    let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
    let mut targets: Vec<(RolloutKind, String)> = sync
        .spec
        .rollout
        .iter()
        .flat_map(|r| r.targets.iter())
        .map(|t| (t.kind, t.name.clone()))
        .collect();
    for kind in [
        RolloutKind::Deployment,
        RolloutKind::StatefulSet,
        RolloutKind::DaemonSet,
    ] {
        for name in reloader_workloads(ctx, kind, namespace, secret).await? {
            if !targets.contains(&(kind, name.clone())) {
                targets.push((kind, name));
            }
        }
    }
    for (kind, name) in targets {
        let restarted = match kind {
            RolloutKind::Deployment => restart::<Deployment>(ctx, namespace, &name, hash).await,
            RolloutKind::StatefulSet => restart::<StatefulSet>(ctx, namespace, &name, hash).await,
            RolloutKind::DaemonSet => restart::<DaemonSet>(ctx, namespace, &name, hash).await,
        };
        match restarted? {
            Some(true) => {
                let message = format!("restarted {kind:?} {name}: Secret {secret} changed");
                report::event(ctx, sync, report::NORMAL, "RolloutTriggered", &message).await;
                if let Some(metrics) = ctx.sync_metrics() {
                    metrics.record_rollout();
                }
            }
            Some(false) => {}
            None => {
                let message = format!("rollout target {kind:?} {name} does not exist");
                report::event(ctx, sync, report::WARNING, "RolloutFailed", &message).await;
            }
        }
    }
    Ok(())
}

/// Annotates one workload's pod template: `Some(true)` restarted, `Some(false)` already at `hash`,
/// `None` no such workload.
async fn restart<K>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    hash: &str,
) -> Result<Option<bool>, Failure>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    ctx.throttle().await;
    let Some(workload) = api
        .get_opt(name)
        .await
        .map_err(|e| Failure::api("reading a rollout target", &e))?
    else {
        return Ok(None);
    };
    let current = serde_json::to_value(&workload).unwrap_or_default();
    if current["spec"]["template"]["metadata"]["annotations"][VERSION_ANNOTATION] == hash {
        return Ok(Some(false));
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"metadata": {"annotations": {VERSION_ANNOTATION: hash}}}},
    });
    ctx.throttle().await;
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Failure::api("restarting a rollout target", &e))?;
    ctx.wrote("rollout");
    Ok(Some(true))
}

/// The workloads of one kind in the namespace whose Reloader annotations ask for `secret`.
async fn reloader_workloads(
    ctx: &Context,
    kind: RolloutKind,
    namespace: &str,
    secret: &str,
) -> Result<Vec<String>, Failure> {
    let client = ctx.client.clone();
    ctx.throttle().await;
    let params = ListParams::default();
    let listed: Result<Vec<Value>, kube::Error> = match kind {
        RolloutKind::Deployment => {
            values(Api::<Deployment>::namespaced(client, namespace), &params).await
        }
        RolloutKind::StatefulSet => {
            values(Api::<StatefulSet>::namespaced(client, namespace), &params).await
        }
        RolloutKind::DaemonSet => {
            values(Api::<DaemonSet>::namespaced(client, namespace), &params).await
        }
    };
    let listed = match listed {
        Ok(listed) => listed,
        // Without `list` on the kind (a scoped install), Reloader's annotations are not honoured for
        // it; the spec's own targets still are.
        Err(kube::Error::Api(status)) if status.code == 403 => {
            tracing::debug!(namespace, kind = ?kind, "not allowed to list workloads for Reloader annotations");
            return Ok(Vec::new());
        }
        Err(e) => {
            return Err(Failure::api(
                "listing workloads for Reloader annotations",
                &e,
            ));
        }
    };
    Ok(listed
        .iter()
        .filter(|w| asks_reloader_for(w, secret))
        .filter_map(|w| w["metadata"]["name"].as_str().map(String::from))
        .collect())
}

async fn values<K>(api: Api<K>, params: &ListParams) -> Result<Vec<Value>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let list = api.list(params).await?;
    Ok(list
        .items
        .iter()
        .filter(|w| w.meta().deletion_timestamp.is_none())
        .map(|w| {
            let mut value = serde_json::to_value(w).unwrap_or_default();
            value["metadata"]["name"] = json!(w.name_any());
            value
        })
        .collect())
}

/// Whether a workload's Reloader annotations ask for restarts when `secret` changes.
pub fn asks_reloader_for(workload: &Value, secret: &str) -> bool {
    let annotations = &workload["metadata"]["annotations"];
    let is_true = |key: &str| annotations[key].as_str() == Some("true");
    let named = annotations["secret.reloader.stakater.com/reload"]
        .as_str()
        .is_some_and(|list| list.split(',').any(|n| n.trim() == secret));
    let auto =
        is_true("reloader.stakater.com/auto") || is_true("secret.reloader.stakater.com/auto");
    named || (auto && references(&workload["spec"]["template"]["spec"], secret))
}

/// Whether a pod spec uses the Secret (env, envFrom, volumes, projected volumes).
fn references(pod: &Value, secret: &str) -> bool {
    let is = |v: &Value| v.as_str() == Some(secret);
    let containers = ["containers", "initContainers"]
        .iter()
        .flat_map(|field| pod[field].as_array().into_iter().flatten());
    for container in containers {
        let env = container["env"].as_array().into_iter().flatten();
        if env
            .into_iter()
            .any(|e| is(&e["valueFrom"]["secretKeyRef"]["name"]))
        {
            return true;
        }
        let env_from = container["envFrom"].as_array().into_iter().flatten();
        if env_from.into_iter().any(|e| is(&e["secretRef"]["name"])) {
            return true;
        }
    }
    pod["volumes"].as_array().into_iter().flatten().any(|v| {
        is(&v["secret"]["secretName"])
            || v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| is(&s["secret"]["name"]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(annotations: Value, pod: Value) -> Value {
        json!({"metadata": {"name": "w", "annotations": annotations},
               "spec": {"template": {"spec": pod}}})
    }

    #[test]
    fn reloader_annotations_pick_workloads() {
        let env_from =
            json!({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "keys"}}]}]});
        let key_ref = json!({"initContainers": [{"name": "c", "env": [{"name": "A",
            "valueFrom": {"secretKeyRef": {"name": "keys", "key": "A"}}}]}]});
        let volume = json!({"volumes": [{"name": "v", "secret": {"secretName": "keys"}}]});
        let projected = json!({"volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "keys"}}]}}]});
        let auto = json!({"reloader.stakater.com/auto": "true"});
        for pod in [&env_from, &key_ref, &volume, &projected] {
            assert!(
                asks_reloader_for(&workload(auto.clone(), pod.clone()), "keys"),
                "{pod}"
            );
            assert!(!asks_reloader_for(
                &workload(auto.clone(), pod.clone()),
                "other"
            ));
            assert!(!asks_reloader_for(
                &workload(json!({}), pod.clone()),
                "keys"
            ));
        }
        let typed = json!({"secret.reloader.stakater.com/auto": "true"});
        assert!(asks_reloader_for(
            &workload(typed, env_from.clone()),
            "keys"
        ));
        let off = json!({"reloader.stakater.com/auto": "false"});
        assert!(!asks_reloader_for(&workload(off, env_from), "keys"));
        let named = json!({"secret.reloader.stakater.com/reload": "a, keys"});
        assert!(asks_reloader_for(
            &workload(named.clone(), json!({})),
            "keys"
        ));
        assert!(!asks_reloader_for(&workload(named, json!({})), "key"));
    }
}
