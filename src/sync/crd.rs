//! The `SecretSync` custom resource (`openclaw.io/v1alpha1`, short name `ocsync`): which
//! SecretProviderClass to fetch as which service account, the Secret to keep filled, and what to restart
//! when it changes. The CRD in `deploy/crds/secretsync.yaml` is generated from these types (a test keeps
//! the two equal).
//!
//! The schema validates the enums, names, and the refresh interval: a Go duration of at least one minute,
//! or `0` (sync once).

// Several `printcolumn(...)` attributes repeat `type_ = …`, which clippy takes for duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A DNS-1123 subdomain: what Kubernetes object names must be.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Most `spec.data` entries.
pub const MAX_DATA: usize = 1000;
/// Most rollout targets.
pub const MAX_ROLLOUT_TARGETS: usize = 100;

/// The API group of the controller's resources.
pub const GROUP: &str = "openclaw.io";

/// A Secret kept in step with the objects of a SecretProviderClass.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "openclaw.io",
    version = "v1alpha1",
    kind = "SecretSync",
    namespaced,
    shortname = "ocsync",
    status = "SecretSyncStatus",
    doc = "Keeps a Kubernetes Secret filled from a SecretProviderClass's objects, fetched as a service account.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.lastSyncTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.refreshInterval) || self.refreshInterval == '0' || duration(self.refreshInterval) >= duration('1m')",
        "message": "refreshInterval must be 0 (sync once) or at least 1m"
    },
    {
        "rule": "!has(self.target) || !has(self.target.deletionPolicy) || self.target.deletionPolicy != 'Delete' || !has(self.target.creationPolicy) || self.target.creationPolicy == 'Owner'",
        "message": "deletionPolicy Delete needs creationPolicy Owner"
    }
]))]
pub struct SecretSyncSpec {
    /// The SecretProviderClass (same namespace) whose parameters say what to fetch.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub secret_provider_class_name: String,
    /// The service account (same namespace) the objects are fetched as.
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub service_account_name: String,
    /// How often the backend is polled for rotation (a Go duration such as `1h`, at least `1m`; `0` =
    /// once), with ±10 % jitter. Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$"))]
    pub refresh_interval: Option<String>,
    /// The Secret to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<SecretSyncTarget>,
    /// Which mounted files become which keys; default: every file, under its own name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_DATA))]
    pub data: Vec<SecretSyncData>,
    /// What to restart when the Secret's data changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<SecretSyncRollout>,
}

/// The Secret a SecretSync writes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncTarget {
    /// The Secret's name (same namespace); default: the SecretSync's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_policy: Option<CreationPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// Whether the controller creates and owns the Secret.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CreationPolicy {
    /// Create it, owned by the SecretSync (deleted with it). The default.
    #[default]
    Owner,
    /// Create it without an owner (kept when the SecretSync goes).
    Orphan,
    /// Write only its keys into an existing Secret; never create one.
    Merge,
    /// Write no Secret (status only).
    None,
}

/// What happens to the Secret when the backend says an object is gone.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the last good data, and say so in status. The default.
    #[default]
    Retain,
    /// Remove the gone objects' keys, and delete the Secret once every object is gone (creationPolicy
    /// Owner only).
    Delete,
    /// Remove only the gone object's keys.
    Merge,
}

/// One key of the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncData {
    /// The mounted file (its object id) the value comes from.
    #[schemars(length(min = 1, max = 4096))]
    pub object_name: String,
    /// The Secret key it is written under.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Workloads restarted (their pod template annotated) when the Secret's data changes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncRollout {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ROLLOUT_TARGETS))]
    pub targets: Vec<RolloutTarget>,
}

/// A workload in the SecretSync's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    pub kind: RolloutKind,
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_PATTERN))]
    pub name: String,
}

/// The kinds of workload a rollout may restart.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// What the controller last did (never a value, never a plain hash of one).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncStatus {
    /// `Ready` (reason `SecretSynced`, or why not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The backend's versions of the synced objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub object_versions: Vec<SyncedObjectVersion>,
    /// The SecretProviderClass (`<uid>/<generation>`) the last sync read: while it is the same, a poll
    /// may compare versions before reading values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_class_version: Option<String>,
    /// Keyed HMAC of the written data (`v1:<key id>:` + HMAC-SHA256 under the controller's key), to
    /// skip writes when nothing changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_hash: Option<String>,
    /// The `syncedHash` the rollout targets were last restarted for; differing from `syncedHash`, a
    /// rollout is due (so a new leader finishes one the old leader could not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_out_hash: Option<String>,
    /// The Secret's `resourceVersion` after the controller's last write: another value means someone
    /// else changed it, and the controller re-applies its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_resource_version: Option<String>,
    /// When the Secret's data last changed (written, or a key removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// When the next poll was due as of the last status write (polls that find nothing changed write
    /// nothing, so this is not moved by them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One object's version as the backend reported it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SyncedObjectVersion {
    pub id: String,
    pub version: String,
}

/// The default `refreshInterval`.
pub const DEFAULT_REFRESH: std::time::Duration = std::time::Duration::from_secs(3600);

impl SecretSyncSpec {
    /// The refresh interval (`None`: sync once), or why it is not a Go duration.
    pub fn refresh(&self) -> Result<Option<std::time::Duration>, String> {
        match self.refresh_interval.as_deref().map(str::trim) {
            None | Some("") => Ok(Some(DEFAULT_REFRESH)),
            Some("0") => Ok(None),
            Some(text) => parse_go_duration(text)
                .filter(|d| !d.is_zero())
                .map(Some)
                .ok_or_else(|| {
                    let shown: String = text.chars().take(32).collect();
                    format!(
                        "spec.refreshInterval {shown:?} is not a duration such as 1h or 90s (or 0 for once)"
                    )
                }),
        }
    }

    /// The Secret's name: `target.name`, else the SecretSync's.
    pub fn target_name<'a>(&'a self, sync_name: &'a str) -> &'a str {
        self.target
            .as_ref()
            .and_then(|t| t.name.as_deref())
            .unwrap_or(sync_name)
    }

    pub fn creation_policy(&self) -> CreationPolicy {
        self.target
            .as_ref()
            .and_then(|t| t.creation_policy)
            .unwrap_or_default()
    }

    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.target
            .as_ref()
            .and_then(|t| t.deletion_policy)
            .unwrap_or_default()
    }
}

/// A Go `time.ParseDuration` string of non-negative units (`1h30m`, `1.5h`, `90s`, `500ms`).
pub fn parse_go_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() || rest.len() > 64 {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * seconds;
    }
    (total.is_finite() && total < 1e10).then(|| std::time::Duration::from_secs_f64(total))
}

/// The CRD as YAML, as `deploy/crds/secretsync.yaml` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = SecretSync::crd();
    format!(
        "# Generated from src/sync/crd.rs (`OPENCLAW_WRITE_CRD=1 cargo test --lib sync::crd` rewrites it).\n{}",
        serde_saphyr::to_string(&crd).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRD_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crds/secretsync.yaml");

    #[test]
    fn the_shipped_crd_is_the_one_the_types_make() {
        let generated = crd_yaml();
        if std::env::var_os("OPENCLAW_WRITE_CRD").is_some() {
            std::fs::write(CRD_FILE, &generated).unwrap();
        }
        let shipped = std::fs::read_to_string(CRD_FILE).unwrap_or_default();
        let parse = |text: &str| serde_saphyr::from_str::<serde_json::Value>(text).unwrap();
        assert_eq!(
            parse(&shipped),
            parse(&generated),
            "deploy/crds/secretsync.yaml differs from the types: run OPENCLAW_WRITE_CRD=1 cargo test --lib sync::crd"
        );
    }

    #[test]
    fn the_crd_names_validates_and_prints_what_users_see() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(SecretSync::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "secretsyncs.openclaw.io");
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["ocsync"])
        );
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["subresources"]["status"], serde_json::json!({}));
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Ready", "Status", "Last Sync", "Age"]);
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let policies = &spec["properties"]["target"]["properties"]["creationPolicy"]["enum"];
        assert_eq!(
            *policies,
            serde_json::json!(["Owner", "Orphan", "Merge", "None"])
        );
        let rules = spec["x-kubernetes-validations"].to_string();
        assert!(rules.contains("duration('1m')"), "{rules}");
        assert_eq!(
            spec["required"],
            serde_json::json!(["secretProviderClassName", "serviceAccountName"])
        );
    }

    #[test]
    fn refresh_intervals_are_go_durations() {
        let spec = |interval: Option<&str>| SecretSyncSpec {
            secret_provider_class_name: "spc".into(),
            service_account_name: "sa".into(),
            refresh_interval: interval.map(String::from),
            target: None,
            data: vec![],
            rollout: None,
        };
        let secs = std::time::Duration::from_secs;
        assert_eq!(spec(None).refresh(), Ok(Some(secs(3600))));
        assert_eq!(spec(Some("0")).refresh(), Ok(None));
        assert_eq!(spec(Some("1h30m")).refresh(), Ok(Some(secs(5400))));
        assert_eq!(spec(Some("1.5h")).refresh(), Ok(Some(secs(5400))));
        assert_eq!(spec(Some("90s")).refresh(), Ok(Some(secs(90))));
        for bad in ["1d", "-1m", "h", "1", "1m1", "0s", "1e5s", "9999999999h"] {
            assert!(spec(Some(bad)).refresh().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_seed_secret_sync_parses() {
        let seed: SecretSync = serde_saphyr::from_str(
            "apiVersion: openclaw.io/v1alpha1\nkind: SecretSync\nmetadata: {name: openclaw-secrets, namespace: openclaw}\n\
             spec:\n  secretProviderClassName: openclaw-aws\n  serviceAccountName: openclaw\n  refreshInterval: 1h\n  \
             target: {name: openclaw-secrets, creationPolicy: Owner, deletionPolicy: Retain}\n  \
             data: [{objectName: OPENCLAW_GATEWAY_TOKEN, key: OPENCLAW_GATEWAY_TOKEN}]\n  \
             rollout: {targets: [{kind: Deployment, name: openclaw-gateway}]}\n",
        )
        .unwrap();
        assert_eq!(
            seed.spec.target.unwrap().creation_policy,
            Some(CreationPolicy::Owner)
        );
        assert_eq!(
            seed.spec.rollout.unwrap().targets[0].kind,
            RolloutKind::Deployment
        );
    }
}
