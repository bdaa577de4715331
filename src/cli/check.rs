//! `check`: lints a SecretProviderClass offline, as this provider started with the same flags and
//! environment as `serve` would take it (without them: the defaults). It reports parameters the chosen
//! backend does not read (with a did-you-mean), then what a mount would refuse before fetching anything:
//! a missing or unknown backend, bad values, bad or duplicate output paths, and parameters the provider's
//! flags refuse (an address outside the allow-list, TLS files outside `--tls-files-dir`, …). One line per
//! finding; nothing is fetched and nothing is written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cli::mount::{spc_attributes, spc_provider};
use crate::proto;
use crate::request::{
    BACKEND_PARAMETER, MountRequest, POD_NAME, POD_NAMESPACE, POD_UID, SERVICE_ACCOUNT_NAME,
};
use crate::server::{self, ServeConfig};
use crate::telemetry::metrics::Metrics;
use crate::version_hmac::VersionKey;

/// Flags of `check`: the SecretProviderClass, and `serve`'s flags.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// SecretProviderClass YAML file to check.
    #[arg(long)]
    pub spc: PathBuf,
    /// The namespace of the pods that mount it (default: its metadata.namespace, else `default`).
    #[arg(long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub serve: ServeConfig,
}

/// Why `check` could not check.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Input(#[from] crate::cli::mount::MountCliError),
    #[error("the provider's flags: {0}")]
    Flags(#[from] server::ServeError),
}

/// Checks the file and prints one line per finding (or one `ok` line); true when there were none.
pub fn run(args: &CheckArgs) -> Result<bool, CheckError> {
    let findings = findings(args)?;
    if findings.is_empty() {
        println!("ok: {} would be mounted as it is", args.spc.display());
    }
    for finding in &findings {
        println!("{}: {finding}", args.spc.display());
    }
    Ok(findings.is_empty())
}

/// What the provider would refuse or ignore in the file.
pub fn findings(args: &CheckArgs) -> Result<Vec<String>, CheckError> {
    let (mut attributes, namespace) = spc_attributes(&args.spc, args.namespace.as_deref())?;
    attributes.insert(POD_NAME.into(), "check".into());
    attributes.insert(POD_NAMESPACE.into(), namespace);
    attributes.insert(
        POD_UID.into(),
        "00000000-0000-4000-8000-000000000000".into(),
    );
    attributes.insert(SERVICE_ACCOUNT_NAME.into(), "default".into());
    // The backend a class that names none gets: its provider's compat socket's, else --default-backend.
    let provider = spc_provider(&args.spc)?;
    let own = args
        .serve
        .socket
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("openclaw");
    let default = if args.serve.compat.iter().any(|c| c.trim() == provider) {
        Some(provider)
    } else if provider == own {
        args.serve.default_backend.clone()
    } else {
        return Ok(vec![format!(
            "UnknownProvider: spec.provider {provider:?} is not this provider's socket ({own}.sock) \
             or one of its --compat sockets: the driver sends its mounts elsewhere"
        )]);
    };
    if let Some(default) = default.filter(|d| !d.trim().is_empty())
        && attributes
            .get(BACKEND_PARAMETER)
            .is_none_or(|b| b.trim().is_empty())
    {
        attributes.insert(BACKEND_PARAMETER.into(), default);
    }
    let request = match request_of(&attributes) {
        Ok(request) => request,
        Err(finding) => return Ok(vec![finding]),
    };
    // Nothing is mounted, so no version key is read or created.
    let versions = Arc::new(VersionKey::random().map_err(server::ServeError::from)?);
    let backends = server::build_backends(&args.serve, versions, &Arc::new(Metrics::default()))?;
    let backend = match backends.select(&request) {
        Ok(backend) => backend,
        Err(error) => return Ok(vec![format!("{}: {}", error.reason, error.message)]),
    };
    let known = backend.parameter_names();
    let mut findings: Vec<String> = request
        .parameters
        .keys()
        .filter(|key| !known.contains(key))
        .map(|key| unknown_parameter(key, backend.name(), &known))
        .collect();
    if let Err(error) = backend.check(&request) {
        findings.push(format!("{}: {}", error.reason, error.message));
    }
    Ok(findings)
}

/// The request the driver would send with these attributes, or the finding that it could not.
fn request_of(attributes: &BTreeMap<String, String>) -> Result<MountRequest, String> {
    let raw = proto::MountRequest {
        attributes: serde_json::to_string(attributes).unwrap_or_default(),
        secrets: "null".into(),
        target_path: "/var/lib/kubelet/pods/check/volumes/kubernetes.io~csi/check/mount".into(),
        permission: "420".into(),
        current_object_version: vec![],
    };
    MountRequest::from_proto(raw).map_err(|e| format!("{}: {}", e.reason, e.message))
}

fn unknown_parameter(key: &str, backend: &str, known: &[String]) -> String {
    let shown: String = key.chars().take(64).collect();
    let mut line = format!(
        "UnknownParameter: the {backend} backend does not read {shown:?} (a mount ignores it)"
    );
    if let Some(near) = nearest(key, known) {
        line.push_str(&format!("; did you mean {near:?}?"));
    }
    line
}

/// The known key closest to `key`, when it is close enough to be a typo.
fn nearest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(distance, k)| *distance <= (k.len() / 4).clamp(1, 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k.as_str())
}

/// Levenshtein distance over bytes (keys are ASCII; a longer key is simply far from every known one).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() > 256 {
        return usize::MAX;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, &y) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(x != y);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion_and_strangers_none() {
        let known: Vec<String> = ["vaultAddress", "roleName", "objects", "audience"]
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(nearest("vaultAdress", &known), Some("vaultAddress"));
        assert_eq!(nearest("rolename", &known), Some("roleName"));
        assert_eq!(nearest("object", &known), Some("objects"));
        assert_eq!(nearest("region", &known), None);
        assert_eq!(nearest(&"x".repeat(1000), &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
