//! The object store behind the fake API server ([`super::fake_kube`]), written from the Kubernetes API
//! reference for the resources and verbs the provider and the sync controller use:
//!
//! - resources: core/v1 `secrets` and `events`, `coordination.k8s.io/v1` `leases`, `apps/v1`
//!   `deployments`/`statefulsets`/`daemonsets`, `secrets-store.csi.x-k8s.io/v1` `secretproviderclasses`,
//!   `openclaw.io/v1alpha1` `secretsyncs` (with the `status` subresource), `events.k8s.io/v1` `events`;
//! - verbs: get, list (pages with `limit` and `continue`; label selectors `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (…)`, `k notin (…)`; field
//!   selectors `metadata.name`, `metadata.namespace`), watch (newline-delimited events replayed from a kept
//!   history after `resourceVersion`, then live; `410 Gone` as an `ERROR` event once the version is older
//!   than the history; `timeoutSeconds`), create (409 `AlreadyExists`), replace (409 `Conflict` on a stale
//!   `resourceVersion`), merge patch (strategic merge patches are treated as merge patches: enough for
//!   maps, which is all the callers send), server-side apply (`fieldManager` required, `force`; a
//!   `metadata.resourceVersion` in the applied configuration is a precondition, 409 when stale), delete
//!   (with background garbage collection of objects whose `ownerReferences` name the deleted uid);
//! - server-side apply field ownership: leaf fields of maps are fields, lists are atomic (so
//!   `ownerReferences` is one field); a manager's apply sets its fields, removes those it applied before
//!   and no longer does (unless another manager owns them too), and conflicts (409, `FieldManagerConflict`
//!   causes) on a field another manager set to another value unless `force=true`; other writes take the
//!   fields they change for their `fieldManager` (default `unknown`); `metadata.managedFields` shows it; a
//!   write that changes nothing keeps the `resourceVersion` and sends no event;
//! - `metadata.generation` moves when `spec` changes; `.status` of a status-subresource kind changes only
//!   through `/status`;
//! - metadata-only reads (`Accept: …;as=PartialObjectMetadata[List]`) return `PartialObjectMetadata`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::fake_kube::status;

/// One kind of object the store serves.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// `api/v1` or `apis/GROUP/VERSION`.
    pub group_path: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub status_subresource: bool,
}

pub const KINDS: [Kind; 9] = [
    Kind {
        group_path: "api/v1",
        plural: "secrets",
        kind: "Secret",
        status_subresource: false,
    },
    Kind {
        group_path: "api/v1",
        plural: "events",
        kind: "Event",
        status_subresource: false,
    },
    Kind {
        group_path: "apis/events.k8s.io/v1",
        plural: "events",
        kind: "Event",
        status_subresource: false,
    },
    Kind {
        group_path: "apis/coordination.k8s.io/v1",
        plural: "leases",
        kind: "Lease",
        status_subresource: false,
    },
    Kind {
        group_path: "apis/apps/v1",
        plural: "deployments",
        kind: "Deployment",
        status_subresource: true,
    },
    Kind {
        group_path: "apis/apps/v1",
        plural: "statefulsets",
        kind: "StatefulSet",
        status_subresource: true,
    },
    Kind {
        group_path: "apis/apps/v1",
        plural: "daemonsets",
        kind: "DaemonSet",
        status_subresource: true,
    },
    Kind {
        group_path: "apis/secrets-store.csi.x-k8s.io/v1",
        plural: "secretproviderclasses",
        kind: "SecretProviderClass",
        status_subresource: false,
    },
    Kind {
        group_path: "apis/openclaw.io/v1alpha1",
        plural: "secretsyncs",
        kind: "SecretSync",
        status_subresource: true,
    },
];

fn kind_of(group_path: &str, plural: &str) -> Option<Kind> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.group_path == group_path && k.plural == plural)
}

/// Objects are keyed by (group path, plural, namespace, name).
type Key = (String, String, String, String);

/// A field: its path from the object's root.
type Field = Vec<String>;

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub version: u64,
    pub group_path: String,
    pub plural: String,
    pub namespace: String,
    pub kind: &'static str,
    pub object: Value,
}

/// The store's state.
pub struct Store {
    pub objects: BTreeMap<Key, Value>,
    /// Field owners per object: field → managers; and each manager's last operation.
    owners: HashMap<Key, BTreeMap<Field, BTreeSet<String>>>,
    operations: HashMap<Key, BTreeMap<String, &'static str>>,
    pub history: Vec<Change>,
    /// Versions at or below this are no longer in the history.
    pub compacted: u64,
    pub version: u64,
    uid: u64,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch.
    closes: tokio::sync::watch::Sender<u64>,
    /// While true, new watch requests wait (a test makes a gap in which changes go unseen).
    pub paused: tokio::sync::watch::Sender<bool>,
    /// While true, watch requests are answered `503` (an API server that cannot serve watches).
    pub watches_fail: bool,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            owners: HashMap::new(),
            operations: HashMap::new(),
            history: Vec::new(),
            compacted: 0,
            version: 0,
            uid: 0,
            changes: broadcast::channel(100_000).0,
            closes: tokio::sync::watch::channel(0).0,
            paused: tokio::sync::watch::channel(false).0,
            watches_fail: false,
        }
    }
}

pub type SharedStore = Arc<Mutex<Store>>;

/// Why a write was refused: a `Status` answer.
pub struct Refusal(
    pub StatusCode,
    pub &'static str,
    pub String,
    pub Option<Value>,
);

impl Refusal {
    fn into_response(self) -> Response {
        status(self.0, self.1, &self.2, self.3)
    }
}

impl Store {
    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    pub fn get(&self, group_path: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .get(&(group_path.into(), plural.into(), ns.into(), name.into()))
            .cloned()
    }

    /// Objects of a kind in a namespace (`None`: every namespace).
    pub fn list(&self, group_path: &str, plural: &str, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, n, _), _)| {
                g == group_path && p == plural && ns.is_none_or(|ns| n == ns)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Stores `object` (created or changed), emitting a watch event; unchanged objects keep their version.
    fn store(&mut self, key: &Key, kind: Kind, mut object: Value, owners_changed: bool) -> Value {
        let before = self.objects.get(key).cloned();
        if let Some(before) = &before
            && !owners_changed
            && strip_volatile(before) == strip_volatile(&object)
        {
            return before.clone();
        }
        let version = self.next_version();
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        object["apiVersion"] = json!(api_version(kind.group_path));
        object["kind"] = json!(kind.kind);
        object["metadata"]["managedFields"] = self.managed_fields(key, kind);
        if object["metadata"]["managedFields"]
            .as_array()
            .is_some_and(|a| a.is_empty())
        {
            object["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("managedFields");
        }
        self.objects.insert(key.clone(), object.clone());
        self.emit(
            version,
            key,
            kind,
            if before.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            },
            object.clone(),
        );
        object
    }

    fn emit(&mut self, version: u64, key: &Key, kind: Kind, kind_word: &str, object: Value) {
        let change = Change {
            version,
            group_path: key.0.clone(),
            plural: key.1.clone(),
            namespace: key.2.clone(),
            kind: kind.kind,
            object: json!({"type": kind_word, "object": object}),
        };
        self.history.push(change.clone());
        let _ = self.changes.send(change);
    }

    fn managed_fields(&self, key: &Key, kind: Kind) -> Value {
        let mut by_manager: BTreeMap<String, Value> = BTreeMap::new();
        for (field, managers) in self.owners.get(key).into_iter().flatten() {
            for manager in managers {
                let entry = by_manager
                    .entry(manager.clone())
                    .or_insert_with(|| json!({}));
                let mut node = entry;
                for part in field {
                    node = node
                        .as_object_mut()
                        .unwrap()
                        .entry(format!("f:{part}"))
                        .or_insert_with(|| json!({}));
                }
            }
        }
        let operations = self.operations.get(key);
        Value::Array(
            by_manager
                .into_iter()
                .map(|(manager, fields)| {
                    let operation = operations
                        .and_then(|o| o.get(&manager))
                        .copied()
                        .unwrap_or("Update");
                    json!({"manager": manager, "operation": operation,
                           "apiVersion": api_version(kind.group_path),
                           "fieldsType": "FieldsV1", "fieldsV1": fields})
                })
                .collect(),
        )
    }

    /// Creates an object; 409 when it exists.
    pub fn create(
        &mut self,
        kind: Kind,
        ns: &str,
        mut object: Value,
        manager: &str,
    ) -> Result<Value, Refusal> {
        let Some(name) = object["metadata"]["name"].as_str().map(String::from) else {
            return Err(invalid(kind.kind, "", "metadata.name: Required value"));
        };
        let key: Key = (
            kind.group_path.into(),
            kind.plural.into(),
            ns.into(),
            name.clone(),
        );
        if self.objects.contains_key(&key) {
            return Err(Refusal(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.plural),
                Some(json!({"name": name, "kind": kind.plural})),
            ));
        }
        if kind.status_subresource && kind.plural == "secretsyncs" {
            object.as_object_mut().unwrap().remove("status");
        }
        if kind.kind == "Secret" && object["type"].is_null() {
            object["type"] = json!("Opaque");
        }
        self.uid += 1;
        let meta = &mut object["metadata"];
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(format!("uid-{}-{}", kind.plural, self.uid));
        meta["creationTimestamp"] = json!("2026-12-02T00:00:00Z");
        if object.get("spec").is_some() {
            object["metadata"]["generation"] = json!(1);
        }
        self.take_changed(&key, &Value::Null, &object, manager, "Update");
        Ok(self.store(&key, kind, object, true))
    }

    /// Replaces an object (or its status); 409 on a stale `resourceVersion`.
    pub fn replace(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        object: Value,
        subresource: Option<&str>,
        manager: &str,
    ) -> Result<Value, Refusal> {
        let key: Key = (
            kind.group_path.into(),
            kind.plural.into(),
            ns.into(),
            name.into(),
        );
        let Some(live) = self.objects.get(&key).cloned() else {
            return Err(not_found(kind.plural, name));
        };
        if let Some(given) = object["metadata"]["resourceVersion"].as_str()
            && Some(given) != live["metadata"]["resourceVersion"].as_str()
        {
            return Err(Refusal(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                     please apply your changes to the latest version and try again",
                    kind.plural
                ),
                Some(json!({"name": name, "kind": kind.plural})),
            ));
        }
        Ok(self.write_over(&key, kind, &live, object, subresource, manager))
    }

    /// Stores `object` in place of `live` (a replace or a patch): what the server sets stays its own.
    fn write_over(
        &mut self,
        key: &Key,
        kind: Kind,
        live: &Value,
        mut object: Value,
        subresource: Option<&str>,
        manager: &str,
    ) -> Value {
        for field in [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "generation",
            "resourceVersion",
        ] {
            object["metadata"][field] = live["metadata"][field].clone();
        }
        let object = self.with_subresource_rules(kind, live, object, subresource);
        let changed = self.take_changed(key, live, &object, manager, "Update");
        self.store(key, kind, object, changed)
    }

    /// Applies a merge patch (RFC 7386) to an object or its status.
    pub fn merge_patch(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        patch: &Value,
        subresource: Option<&str>,
        manager: &str,
    ) -> Result<Value, Refusal> {
        let key: Key = (
            kind.group_path.into(),
            kind.plural.into(),
            ns.into(),
            name.into(),
        );
        let Some(live) = self.objects.get(&key).cloned() else {
            return Err(not_found(kind.plural, name));
        };
        let mut object = live.clone();
        merge(&mut object, patch);
        Ok(self.write_over(&key, kind, &live, object, subresource, manager))
    }

    /// Server-side apply (see the module doc).
    pub fn apply(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        applied: &Value,
        manager: &str,
        force: bool,
    ) -> Result<(Value, bool), Refusal> {
        let key: Key = (
            kind.group_path.into(),
            kind.plural.into(),
            ns.into(),
            name.into(),
        );
        let live = self.objects.get(&key).cloned();
        // A resourceVersion in the applied configuration is a precondition, as for any patch.
        if let Some(given) = applied["metadata"]["resourceVersion"].as_str()
            && live
                .as_ref()
                .and_then(|l| l["metadata"]["resourceVersion"].as_str())
                != Some(given)
        {
            return Err(Refusal(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                     please apply your changes to the latest version and try again",
                    kind.plural
                ),
                Some(json!({"name": name, "kind": kind.plural})),
            ));
        }
        let applied_fields = fields(applied);
        let live_fields = live.as_ref().map(fields).unwrap_or_default();
        let owners = self.owners.get(&key).cloned().unwrap_or_default();
        let mut conflicts = Vec::new();
        for (field, value) in &applied_fields {
            if let Some(current) = live_fields.get(field)
                && current != value
            {
                let others: Vec<&String> = owners
                    .get(field)
                    .into_iter()
                    .flatten()
                    .filter(|m| *m != manager)
                    .collect();
                if let Some(other) = others.first()
                    && !force
                {
                    conflicts.push(json!({"reason": "FieldManagerConflict",
                        "message": format!("conflict with \"{other}\""),
                        "field": format!(".{}", field.join("."))}));
                }
            }
        }
        if !conflicts.is_empty() {
            return Err(Refusal(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Apply failed with {} conflicts", conflicts.len()),
                Some(json!({"name": name, "kind": kind.plural, "causes": conflicts})),
            ));
        }
        let mut object = live
            .clone()
            .unwrap_or_else(|| json!({"metadata": {"name": name}}));
        let mut new_owners = owners.clone();
        // Fields this manager applied before and no longer does.
        for (field, managers) in &owners {
            if managers.contains(manager) && !applied_fields.contains_key(field) {
                let left = new_owners.get_mut(field).unwrap();
                left.remove(manager);
                if left.is_empty() {
                    new_owners.remove(field);
                    remove_path(&mut object, field);
                }
            }
        }
        for (field, value) in &applied_fields {
            let same = live_fields.get(field) == Some(value);
            let entry = new_owners.entry(field.clone()).or_default();
            if !same {
                entry.clear();
            }
            entry.insert(manager.to_string());
            set_path(&mut object, field, value.clone());
        }
        let created = live.is_none();
        if created {
            if kind.status_subresource {
                object.as_object_mut().unwrap().remove("status");
            }
            if kind.kind == "Secret" && object["type"].is_null() {
                object["type"] = json!("Opaque");
            }
            self.uid += 1;
            object["metadata"]["namespace"] = json!(ns);
            object["metadata"]["uid"] = json!(format!("uid-{}-{}", kind.plural, self.uid));
            object["metadata"]["creationTimestamp"] = json!("2026-12-02T00:00:00Z");
            if object.get("spec").is_some() {
                object["metadata"]["generation"] = json!(1);
            }
        } else if let Some(live) = &live {
            object = self.with_subresource_rules(kind, live, object, None);
        }
        let owners_changed = new_owners != owners;
        self.owners.insert(key.clone(), new_owners);
        self.operations
            .entry(key.clone())
            .or_default()
            .insert(manager.to_string(), "Apply");
        Ok((self.store(&key, kind, object, owners_changed), created))
    }

    /// Deletes an object and, in the background, what it owns.
    pub fn delete(&mut self, kind: Kind, ns: &str, name: &str) -> Result<Value, Refusal> {
        let key: Key = (
            kind.group_path.into(),
            kind.plural.into(),
            ns.into(),
            name.into(),
        );
        let Some(object) = self.objects.remove(&key) else {
            return Err(not_found(kind.plural, name));
        };
        self.owners.remove(&key);
        self.operations.remove(&key);
        let version = self.next_version();
        let mut gone = object.clone();
        gone["metadata"]["resourceVersion"] = json!(version.to_string());
        self.emit(version, &key, kind, "DELETED", gone);
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let dependents: Vec<(Kind, String)> = self
            .objects
            .iter()
            .filter(|((_, _, n, _), o)| {
                n == ns
                    && o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid.as_str()))
            })
            .filter_map(|((g, p, _, name), _)| Some((kind_of(g, p)?, name.clone())))
            .collect();
        for (kind, name) in dependents {
            let _ = self.delete(kind, ns, &name);
        }
        Ok(object)
    }

    /// The written object with the status-subresource and generation rules applied.
    fn with_subresource_rules(
        &self,
        kind: Kind,
        live: &Value,
        mut object: Value,
        subresource: Option<&str>,
    ) -> Value {
        if kind.status_subresource {
            match subresource {
                Some("status") => {
                    let status = object.get("status").cloned();
                    object = live.clone();
                    match status {
                        Some(status) => object["status"] = status,
                        None => {
                            object.as_object_mut().unwrap().remove("status");
                        }
                    }
                }
                _ => match live.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => {
                        object.as_object_mut().unwrap().remove("status");
                    }
                },
            }
        }
        let generation = live["metadata"]["generation"].as_i64();
        if let Some(generation) = generation {
            let bumped = if object.get("spec") != live.get("spec") {
                generation + 1
            } else {
                generation
            };
            object["metadata"]["generation"] = json!(bumped);
        }
        object
    }

    /// Gives `manager` the fields a non-apply write changed; returns whether ownership changed.
    fn take_changed(
        &mut self,
        key: &Key,
        before: &Value,
        after: &Value,
        manager: &str,
        operation: &'static str,
    ) -> bool {
        let before = fields(before);
        let after_fields = fields(after);
        let owners = self.owners.entry(key.clone()).or_default();
        let previous = owners.clone();
        for (field, value) in &after_fields {
            if before.get(field) != Some(value) {
                owners.insert(field.clone(), BTreeSet::from([manager.to_string()]));
            }
        }
        owners.retain(|field, _| after_fields.contains_key(field));
        let changed = *owners != previous;
        if changed {
            self.operations
                .entry(key.clone())
                .or_default()
                .insert(manager.to_string(), operation);
        }
        changed
    }
}

/// Serves one request for a store resource; `None` when the path is not one.
pub async fn handle(
    store: &SharedStore,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Response> {
    let route = Route::parse(uri.path())?;
    let query = query_of(uri);
    let metadata_only = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let manager = query
        .get("fieldManager")
        .cloned()
        .unwrap_or_else(|| "unknown".into());
    let ns = route.namespace.clone().unwrap_or_default();
    let kind = route.kind;
    let response = match (method.clone(), route.name.as_deref()) {
        (Method::GET, None)
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            if store.lock().unwrap().watches_fail {
                let refusal = Refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "watches are not served now".into(),
                    None,
                );
                return Some(refusal.into_response());
            }
            return Some(watch(store.clone(), route, query, metadata_only));
        }
        (Method::GET, None) => {
            let store = store.lock().unwrap();
            let selector = query.get("labelSelector").cloned().unwrap_or_default();
            let fields_selector = query.get("fieldSelector").cloned().unwrap_or_default();
            let all: Vec<Value> = store
                .list(kind.group_path, kind.plural, route.namespace.as_deref())
                .into_iter()
                .filter(|o| matches_labels(o, &selector) && matches_fields(o, &fields_selector))
                .map(|o| if metadata_only { partial(&o) } else { o })
                .collect();
            // Pages: `limit`, and `continue` with the token of the page before: the first page's
            // resourceVersion (a watch from it misses nothing listed across pages) and the last key
            // returned (the list is in key order, so objects deleted between pages shift nothing).
            let (version, after) = match query.get("continue").filter(|c| !c.is_empty()) {
                Some(token) => match token.split_once(':').and_then(|(v, key)| {
                    let (namespace, name) = key.split_once('/')?;
                    Some((
                        v.parse::<u64>().ok()?,
                        Some((namespace.to_string(), name.to_string())),
                    ))
                }) {
                    Some(parsed) => parsed,
                    None => return Some(bad_request("malformed continue token").into_response()),
                },
                None => (store.version, None),
            };
            let limit = query
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l > 0)
                .unwrap_or(usize::MAX);
            let key_of = |o: &Value| {
                let meta = &o["metadata"];
                (
                    meta["namespace"].as_str().unwrap_or_default().to_string(),
                    meta["name"].as_str().unwrap_or_default().to_string(),
                )
            };
            let rest: Vec<Value> = all
                .into_iter()
                .filter(|o| after.as_ref().is_none_or(|after| key_of(o) > *after))
                .collect();
            let items: Vec<Value> = rest.iter().take(limit).cloned().collect();
            let mut list_meta = json!({"resourceVersion": version.to_string()});
            if let Some(last) = items.last().filter(|_| rest.len() > limit) {
                let (namespace, name) = key_of(last);
                list_meta["continue"] = json!(format!("{version}:{namespace}/{name}"));
                list_meta["remainingItemCount"] = json!(rest.len() - limit);
            }
            let list_kind = if metadata_only {
                "PartialObjectMetadataList".to_string()
            } else {
                format!("{}List", kind.kind)
            };
            let api = if metadata_only {
                "meta.k8s.io/v1".to_string()
            } else {
                api_version(kind.group_path)
            };
            Ok((
                StatusCode::OK,
                json!({"kind": list_kind, "apiVersion": api,
                       "metadata": list_meta, "items": items}),
            ))
        }
        (Method::GET, Some(name)) => {
            let store = store.lock().unwrap();
            match store.get(kind.group_path, kind.plural, &ns, name) {
                Some(object) if metadata_only => Ok((StatusCode::OK, partial(&object))),
                Some(object) => Ok((StatusCode::OK, object)),
                None => Err(not_found(kind.plural, name)),
            }
        }
        (Method::POST, None) => match parse_body(body) {
            Some(object) => store
                .lock()
                .unwrap()
                .create(kind, &ns, object, &manager)
                .map(|o| (StatusCode::CREATED, o)),
            None => Err(bad_request("the body is not JSON")),
        },
        (Method::PUT, Some(name)) => match parse_body(body) {
            Some(object) => store
                .lock()
                .unwrap()
                .replace(
                    kind,
                    &ns,
                    name,
                    object,
                    route.subresource.as_deref(),
                    &manager,
                )
                .map(|o| (StatusCode::OK, o)),
            None => Err(bad_request("the body is not JSON")),
        },
        (Method::PATCH, Some(name)) => patch(store, kind, &ns, name, &route, &query, headers, body),
        (Method::DELETE, Some(name)) => store
            .lock()
            .unwrap()
            .delete(kind, &ns, name)
            .map(|o| (StatusCode::OK, o)),
        _ => Err(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
            None,
        )),
    };
    Some(match response {
        Ok((code, body)) => (code, axum::Json(body)).into_response(),
        Err(refusal) => refusal.into_response(),
    })
}

#[allow(clippy::too_many_arguments)]
fn patch(
    store: &SharedStore,
    kind: Kind,
    ns: &str,
    name: &str,
    route: &Route,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(StatusCode, Value), Refusal> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let Some(patch) = parse_body(body) else {
        return Err(bad_request("the body is not JSON or YAML"));
    };
    let manager = query.get("fieldManager").cloned();
    let mut store = store.lock().unwrap();
    if content_type.starts_with("application/apply-patch") {
        let Some(manager) = manager else {
            return Err(bad_request(
                "PATCH with apply requires a fieldManager query parameter",
            ));
        };
        if route.subresource.is_some() {
            return Err(bad_request(
                "apply to a subresource is not supported by this fake",
            ));
        }
        let force = query.get("force").is_some_and(|f| f == "true");
        return store
            .apply(kind, ns, name, &patch, &manager, force)
            .map(|(o, created)| {
                let code = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                (code, o)
            });
    }
    if content_type.starts_with("application/merge-patch+json")
        || content_type.starts_with("application/strategic-merge-patch+json")
    {
        let manager = manager.unwrap_or_else(|| "unknown".into());
        return store
            .merge_patch(
                kind,
                ns,
                name,
                &patch,
                route.subresource.as_deref(),
                &manager,
            )
            .map(|o| (StatusCode::OK, o));
    }
    Err(Refusal(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        format!("the patch content type {content_type:?} is not supported"),
        None,
    ))
}

/// A store URL: `/api/v1/…` or `/apis/GROUP/VERSION/…`, then `namespaces/NS/PLURAL[/NAME[/SUB]]` or
/// `PLURAL` (every namespace).
pub struct Route {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Route {
    pub fn parse(path: &str) -> Option<Self> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group_path, rest) = match *parts.first()? {
            "api" => (parts.get(..2)?.join("/"), parts.get(2..)?),
            "apis" => (parts.get(..3)?.join("/"), parts.get(3..)?),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            _ => (None, rest),
        };
        let (plural, name, subresource) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] if namespace.is_some() => (*plural, Some(name.to_string()), None),
            [plural, name, sub] if namespace.is_some() => {
                (*plural, Some(name.to_string()), Some(sub.to_string()))
            }
            _ => return None,
        };
        let kind = kind_of(&group_path, plural)?;
        if subresource
            .as_deref()
            .is_some_and(|s| s != "status" || !kind.status_subresource)
        {
            return None;
        }
        Some(Self {
            kind,
            namespace,
            name,
            subresource,
        })
    }
}

fn watch(
    store: SharedStore,
    route: Route,
    query: HashMap<String, String>,
    metadata_only: bool,
) -> Response {
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let since = query.get("resourceVersion").cloned().unwrap_or_default();
    let kind = route.kind;
    let namespace = route.namespace.clone();
    let wanted = move |change: &Change| {
        change.group_path == kind.group_path
            && change.plural == kind.plural
            && namespace.as_ref().is_none_or(|ns| *ns == change.namespace)
            && matches_labels(&change.object["object"], &selector)
    };
    let shape = move |mut event: Value| {
        if metadata_only && event["type"] != "ERROR" {
            event["object"] = partial(&event["object"]);
        }
        let mut line = serde_json::to_vec(&event).unwrap();
        line.push(b'\n');
        Ok::<Bytes, std::convert::Infallible>(Bytes::from(line))
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(1024);
    // The answer's head goes at once; its events wait while watches are paused (a test's outage).
    let mut paused = store.lock().unwrap().paused.subscribe();
    tokio::spawn(async move {
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let (first, mut live, mut closes) = {
            let store = store.lock().unwrap();
            let live = store.changes.subscribe();
            let closes = store.closes.subscribe();
            let first: Result<Vec<Value>, Value> = match since.parse::<u64>() {
                Ok(0) | Err(_) => Ok(store
                    .list(kind.group_path, kind.plural, route.namespace.as_deref())
                    .into_iter()
                    .map(|o| json!({"type": "ADDED", "object": o}))
                    .filter(|e| {
                        wanted(&Change {
                            version: 0,
                            group_path: kind.group_path.into(),
                            plural: kind.plural.into(),
                            namespace: e["object"]["metadata"]["namespace"]
                                .as_str()
                                .unwrap_or_default()
                                .into(),
                            kind: kind.kind,
                            object: e.clone(),
                        })
                    })
                    .collect()),
                Ok(version) if version < store.compacted => {
                    Err(json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {version} ({})", store.compacted),
                "reason": "Expired", "code": 410}}))
                }
                Ok(version) => Ok(store
                    .history
                    .iter()
                    .filter(|c| c.version > version && wanted(c))
                    .map(|c| c.object.clone())
                    .collect()),
            };
            (first, live, closes)
        };
        let last_sent = store.lock().unwrap().version;
        let events = match first {
            Ok(events) => events,
            Err(gone) => {
                let _ = tx.send(shape(gone)).await;
                return;
            }
        };
        for event in events {
            if tx.send(shape(event)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            // A close is seen before any change made after it.
            tokio::select! {
                biased;
                _ = closes.changed() => return,
                change = live.recv() => match change {
                    Ok(change) if change.version > last_sent && wanted(&change) => {
                        if tx.send(shape(change.object)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

/// Ends every open watch.
pub fn close_watches(store: &SharedStore) {
    store.lock().unwrap().closes.send_modify(|n| *n += 1);
}

fn partial(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
           "metadata": object["metadata"].clone()})
}

fn api_version(group_path: &str) -> String {
    group_path
        .trim_start_matches("apis/")
        .trim_start_matches("api/")
        .to_string()
}

fn query_of(uri: &Uri) -> HashMap<String, String> {
    uri.query().map(url_decode_pairs).unwrap_or_default()
}

fn url_decode_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_body(body: &Bytes) -> Option<Value> {
    serde_json::from_slice(body)
        .ok()
        .or_else(|| serde_saphyr::from_str(std::str::from_utf8(body).ok()?).ok())
}

fn bad_request(message: &str) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, "BadRequest", message.into(), None)
}

fn not_found(plural: &str, name: &str) -> Refusal {
    Refusal(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{plural} \"{name}\" not found"),
        Some(json!({"name": name, "kind": plural})),
    )
}

fn invalid(kind: &str, name: &str, message: &str) -> Refusal {
    Refusal(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{kind} \"{name}\" is invalid: {message}"),
        Some(json!({"name": name, "kind": kind})),
    )
}

/// What a write compares to tell a change: the object without its server-set fields.
fn strip_volatile(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    object
}

/// The object's fields for ownership: leaves of maps (lists and scalars are leaves); the server's own
/// metadata and `status` are not fields.
fn fields(object: &Value) -> BTreeMap<Field, Value> {
    let mut out = BTreeMap::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for (field, value) in value.as_object().into_iter().flatten() {
                    match field.as_str() {
                        "labels" | "annotations" => {
                            for (k, v) in value.as_object().into_iter().flatten() {
                                out.insert(
                                    vec!["metadata".into(), field.clone(), k.clone()],
                                    v.clone(),
                                );
                            }
                        }
                        "ownerReferences" | "finalizers" => {
                            out.insert(vec!["metadata".into(), field.clone()], value.clone());
                        }
                        _ => {}
                    }
                }
            }
            _ => flatten(&mut out, vec![key.clone()], value),
        }
    }
    out
}

fn flatten(out: &mut BTreeMap<Field, Value>, path: Field, value: &Value) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, value) in map {
                let mut path = path.clone();
                path.push(key.clone());
                flatten(out, path, value);
            }
        }
        Some(_) => {}
        None => {
            out.insert(path, value.clone());
        }
    }
}

fn set_path(object: &mut Value, path: &[String], value: Value) {
    let mut node = object;
    for part in &path[..path.len() - 1] {
        if !node.get(part).is_some_and(Value::is_object) {
            node[part.as_str()] = json!({});
        }
        node = node.get_mut(part).unwrap();
    }
    node[path[path.len() - 1].as_str()] = value;
}

fn remove_path(object: &mut Value, path: &[String]) {
    fn remove(node: &mut Value, path: &[String]) {
        let Some(map) = node.as_object_mut() else {
            return;
        };
        if path.len() == 1 {
            map.remove(&path[0]);
            return;
        }
        if let Some(child) = map.get_mut(&path[0]) {
            remove(child, &path[1..]);
            if child.as_object().is_some_and(Map::is_empty) {
                map.remove(&path[0]);
            }
        }
    }
    remove(object, path);
}

/// RFC 7386 merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().unwrap();
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Whether an object's labels match a label selector.
pub fn matches_labels(object: &Value, selector: &str) -> bool {
    let labels = &object["metadata"]["labels"];
    let label = |k: &str| labels[k].as_str().map(String::from);
    split_requirements(selector).iter().all(|req| {
        let req = req.trim();
        if req.is_empty() {
            return true;
        }
        if let Some((k, set)) = req.split_once(" notin ") {
            let set = parse_set(set);
            return label(k.trim()).is_none_or(|v| !set.contains(&v));
        }
        if let Some((k, set)) = req.split_once(" in ") {
            let set = parse_set(set);
            return label(k.trim()).is_some_and(|v| set.contains(&v));
        }
        if let Some((k, v)) = req.split_once("!=") {
            return label(k.trim()).as_deref() != Some(v.trim());
        }
        if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            return label(k.trim()).as_deref() == Some(v.trim());
        }
        if let Some(k) = req.strip_prefix('!') {
            return label(k.trim()).is_none();
        }
        label(req).is_some()
    })
}

fn split_requirements(selector: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut depth = 0;
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        out.last_mut().unwrap().push(c);
    }
    out
}

fn parse_set(set: &str) -> Vec<String> {
    set.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

fn matches_fields(object: &Value, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|r| !r.is_empty())
        .all(|req| match req.split_once('=') {
            Some(("metadata.name", v)) => object["metadata"]["name"] == v,
            Some(("metadata.namespace", v)) => object["metadata"]["namespace"] == v,
            _ => true,
        })
}
