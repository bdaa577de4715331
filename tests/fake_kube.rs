//! The fake API server checked against the real Kubernetes client (`kube`): what the sync controller
//! relies on must behave as the API reference says — conflicts, server-side apply ownership, no-op
//! writes, metadata-only reads, label selectors, the status subresource, garbage collection.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::fake_kube::FakeKube;

async fn client(kube: &FakeKube) -> kube::Client {
    openclaw_csi_provider::install_crypto_provider();
    let file = kube::config::Kubeconfig::read_from(&kube.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn code(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("not an API error: {other}"),
    }
}

fn secret(name: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data})
}

#[tokio::test]
async fn server_side_apply_tracks_who_owns_which_key() {
    let kube = FakeKube::start();
    let api: Api<Secret> = Api::namespaced(client(&kube).await, "ns");
    let ours = PatchParams::apply("openclaw-sync");
    let theirs = PatchParams::apply("someone-else");
    let created = api
        .patch(
            "s",
            &ours,
            &Patch::Apply(secret("s", json!({"A": "YQ==", "B": "Yg=="}))),
        )
        .await
        .unwrap();
    let version = created.metadata.resource_version.clone();
    // The same apply again changes nothing: same version.
    let again = api
        .patch(
            "s",
            &ours,
            &Patch::Apply(secret("s", json!({"A": "YQ==", "B": "Yg=="}))),
        )
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, version);
    // Another manager adds its own key; changing ours conflicts unless forced.
    api.patch(
        "s",
        &theirs,
        &Patch::Apply(secret("s", json!({"C": "Yw=="}))),
    )
    .await
    .unwrap();
    let conflict = api
        .patch(
            "s",
            &theirs,
            &Patch::Apply(secret("s", json!({"A": "eA==", "C": "Yw=="}))),
        )
        .await
        .unwrap_err();
    assert_eq!(code(conflict), (409, "Conflict".into()));
    // Ours drops B: B goes, their C stays.
    let dropped = api
        .patch(
            "s",
            &ours.clone().force(),
            &Patch::Apply(secret("s", json!({"A": "YQ=="}))),
        )
        .await
        .unwrap();
    let keys: Vec<&String> = dropped.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["A", "C"]);
    let managers: Vec<String> = dropped
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["openclaw-sync", "someone-else"]);
    // A forced apply takes a key over.
    let taken = api
        .patch(
            "s",
            &theirs.force(),
            &Patch::Apply(secret("s", json!({"A": "eA==", "C": "Yw=="}))),
        )
        .await
        .unwrap();
    assert_eq!(taken.data.unwrap()["A"].0, b"x");
}

#[tokio::test]
async fn writes_conflict_and_reads_can_skip_the_data() {
    let kube = FakeKube::start();
    let client = client(&kube).await;
    let api: Api<Secret> = Api::namespaced(client.clone(), "ns");
    let labelled = serde_json::from_value::<Secret>(json!({
        "metadata": {"name": "a", "labels": {"openclaw.io/managed": "true"}},
        "data": {"K": "dmFsdWU="}}))
    .unwrap();
    let created = api.create(&PostParams::default(), &labelled).await.unwrap();
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let again = api
        .create(&PostParams::default(), &labelled)
        .await
        .unwrap_err();
    assert_eq!(code(again), (409, "AlreadyExists".into()));
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "b"}})).unwrap(),
    )
    .await
    .unwrap();
    let meta = api.get_metadata("a").await.unwrap();
    assert_eq!(meta.metadata.name.as_deref(), Some("a"));
    let listed = api
        .list_metadata(&ListParams::default().labels("openclaw.io/managed=true"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let raw = serde_json::to_string(&listed).unwrap();
    assert!(!raw.contains("dmFsdWU="), "metadata reads carry no data");
    assert_eq!(
        api.list(&ListParams::default().labels("!openclaw.io/managed"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    // A replace from a stale read is refused.
    let leases: Api<Lease> = Api::namespaced(client, "ns");
    let lease = leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let mut first = lease.clone();
    first.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("l", &PostParams::default(), &first)
        .await
        .unwrap();
    let stale = leases
        .replace("l", &PostParams::default(), &lease)
        .await
        .unwrap_err();
    assert_eq!(code(stale), (409, "Conflict".into()));
    assert_eq!(code(api.get("missing").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn status_generation_and_garbage_collection() {
    let kube = FakeKube::start();
    let client = client(&kube).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "ns");
    let deployment = deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "d"},
                "spec": {"selector": {"matchLabels": {"app": "d"}},
                         "template": {"metadata": {"labels": {"app": "d"}},
                                      "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(deployment.metadata.generation, Some(1));
    let annotate = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"metadata": {"annotations": {"openclaw.io/secret-version": "v1:x"}}}}});
    let patched = deployments
        .patch(
            "d",
            &PatchParams::apply("openclaw-rollout").force(),
            &Patch::Apply(&annotate),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert_eq!(
        patched
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers
            .len(),
        1
    );
    let same = deployments
        .patch(
            "d",
            &PatchParams::apply("openclaw-rollout").force(),
            &Patch::Apply(&annotate),
        )
        .await
        .unwrap();
    assert_eq!(
        same.metadata.generation,
        Some(2),
        "an unchanged apply rolls nothing"
    );
    // Status writes leave the spec; spec writes leave the status.
    let status = deployments
        .patch_status(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(status.metadata.generation, Some(2));
    let spec_with_status = deployments
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(spec_with_status.status.unwrap().replicas, Some(3));
    // An object owned by the deployment goes with it.
    let secrets: Api<Secret> = Api::namespaced(client, "ns");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owned", "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "d",
                "uid": deployment.metadata.uid, "controller": true}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    deployments
        .delete("d", &DeleteParams::default())
        .await
        .unwrap();
    assert!(secrets.get_opt("owned").await.unwrap().is_none());
}

#[tokio::test]
async fn lists_come_in_pages_that_skip_nothing() {
    let kube = FakeKube::start();
    let api: Api<Secret> = Api::namespaced(client(&kube).await, "ns");
    for name in ["a", "b", "c", "d", "e"] {
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let first = api
        .list_metadata(&ListParams::default().limit(2))
        .await
        .unwrap();
    let names = |list: &kube::core::ObjectList<_>| -> Vec<String> {
        list.items
            .iter()
            .map(|o: &kube::core::PartialObjectMeta<Secret>| o.metadata.name.clone().unwrap())
            .collect()
    };
    assert_eq!(names(&first), ["a", "b"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token");
    // An object listed already goes away between pages: the next page still starts after "b".
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let second = api
        .list_metadata(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second), ["c", "d"]);
    assert_eq!(
        second.metadata.resource_version, first.metadata.resource_version,
        "every page carries the first page's version"
    );
    let last = api
        .list_metadata(
            &ListParams::default()
                .limit(2)
                .continue_token(second.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(&last), ["e"]);
    assert!(
        last.metadata
            .continue_
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    );
    let bad = api
        .list(&ListParams::default().continue_token("not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(code(bad).0, 400);
}
