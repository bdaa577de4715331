//! The Vault backend's SecretProviderClass parameters, in the official Vault provider's spelling
//! (`vaultAddress`, …) and the OpenBao provider's (`openbaoAddress`, …), checked into one [`VaultParams`].
//! Settings given twice are refused by name; unknown keys are ignored, as the official provider does
//! (pods add their own `volumeAttributes`), with a debug log line naming the key.
//!
//! Every parameter is the pod author's to set, so what must be the admin's is checked here: the address
//! must be `--vault-addr` or one `--vault-allowed-addresses` names, TLS files must lie in
//! `--tls-files-dir`, and turning verification off needs `--allow-insecure-tls`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::error::{ErrorKind, MountError, MountResult, Reason};
use crate::file_mode::FileMode;
use crate::request::MountRequest;
use crate::tls_files::{self, TLS_FILES_DIR_FLAG, TlsFile, TlsFilesDir};
use crate::transform::Encoding;

use crate::backend::COMMON_PARAMETERS as COMMON_KEYS;
/// Keys the official provider ignores (deprecated), accepted and ignored here too.
const IGNORED_KEYS: [&str; 2] = ["kubernetesServiceAccountPath", "vaultCAPem"];
/// Settings with a `vault…` and an `openbao…` spelling (the suffix after the prefix).
const PREFIXED: [&str; 10] = [
    "Address",
    "Namespace",
    "CACertPath",
    "CADirectory",
    "TLSServerName",
    "TLSClientCertPath",
    "TLSClientKeyPath",
    "SkipTLSVerify",
    "KubernetesMountPath",
    "AuthMountPath",
];

/// TLS settings for talking to Vault; part of the HTTP client's identity. Files say who named them
/// (an admin's flag, or a pod's parameter, which must stay in `--tls-files-dir`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsParams {
    pub ca_cert: Option<TlsFile>,
    pub ca_directory: Option<TlsFile>,
    pub server_name: Option<String>,
    pub client_cert: Option<TlsFile>,
    pub client_key: Option<TlsFile>,
    pub skip_verify: bool,
}

/// The checked parameters of one Vault mount.
#[derive(Debug, Clone)]
pub struct VaultParams {
    pub role: String,
    /// In [`canonical_address`] form: `scheme://host:port` or `unix:///path`.
    pub address: String,
    pub namespace: Option<String>,
    pub auth_mount: String,
    pub audience: String,
    pub tls: TlsParams,
}

/// Which addresses SecretProviderClasses may name besides the provider's own `--vault-addr`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedAddresses {
    /// Only these (canonical) addresses; empty = only `--vault-addr`.
    #[default]
    Listed,
    /// `--vault-allowed-addresses '*'`: any http:// or https:// address (never a unix socket).
    AnyHttp,
}

/// Provider-wide settings from flags: defaults for what a SecretProviderClass leaves out, and the
/// bounds on what it may ask for.
#[derive(Debug, Clone, Default)]
pub struct VaultDefaults {
    /// Canonical form.
    pub address: Option<String>,
    pub namespace: Option<String>,
    pub auth_mount: String,
    pub allowed: AllowedAddresses,
    /// Canonical addresses mounts may use besides `address` (with [`AllowedAddresses::Listed`]).
    pub allowed_addresses: Vec<String>,
    /// The admin's TLS settings, used where a SecretProviderClass sets none.
    pub tls: TlsParams,
    /// Where pods' TLS file parameters must point; `None` refuses them.
    pub tls_files_dir: Option<Arc<TlsFilesDir>>,
    /// Whether pods may set `vaultSkipTLSVerify: true`.
    pub allow_insecure_tls: bool,
}

/// One entry of `objects`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultObject {
    pub object_name: String,
    pub secret_path: String,
    #[serde(default)]
    pub secret_key: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub secret_args: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default)]
    pub file_permission: Option<FileMode>,
    /// A missing secret or key skips the object instead of failing the mount (this provider's own).
    #[serde(default)]
    pub optional: bool,
    /// Accepted for compatibility; ignored as by the official provider.
    #[serde(default)]
    pub object_version: Option<serde::de::IgnoredAny>,
}

fn invalid(message: String) -> MountError {
    MountError::invalid(Reason::InvalidParameter, message)
}

/// The value of a setting written either `vault<Suffix>` or `openbao<Suffix>`; both is an error.
fn prefixed<'a>(request: &'a MountRequest, suffix: &str) -> MountResult<Option<(&'a str, String)>> {
    let vault = format!("vault{suffix}");
    let openbao = format!("openbao{suffix}");
    match (request.parameter(&vault), request.parameter(&openbao)) {
        (Some(_), Some(_)) => Err(invalid(format!(
            "set only one of {vault:?} and {openbao:?}"
        ))),
        (Some(value), None) => Ok(Some((value, vault))),
        (None, Some(value)) => Ok(Some((value, openbao))),
        (None, None) => Ok(None),
    }
}

/// Whether the vault backend reads `key`.
pub fn is_known_key(key: &str) -> bool {
    COMMON_KEYS.contains(&key)
        || IGNORED_KEYS.contains(&key)
        || key == "roleName"
        || key == "audience"
        || PREFIXED.iter().any(|suffix| {
            key.strip_prefix("vault")
                .or_else(|| key.strip_prefix("openbao"))
                == Some(suffix)
        })
}

/// Every key the vault backend reads, in both spellings.
pub fn known_keys() -> Vec<String> {
    let fixed = COMMON_KEYS
        .iter()
        .chain(&IGNORED_KEYS)
        .chain(&["roleName", "audience"]);
    let prefixed = PREFIXED
        .iter()
        .flat_map(|suffix| [format!("vault{suffix}"), format!("openbao{suffix}")]);
    fixed.map(|k| k.to_string()).chain(prefixed).collect()
}

/// Unknown keys are ignored, as the official provider ignores them; the key (never its value) is logged.
fn log_unknown_keys(request: &MountRequest) {
    for key in request.parameters.keys().filter(|k| !is_known_key(k)) {
        let shown: String = key.chars().take(64).collect();
        tracing::debug!(parameter = %shown, "ignoring a parameter the vault backend does not read");
    }
}

impl VaultParams {
    /// Checks the request's parameters against the provider's defaults and bounds.
    pub fn parse(request: &MountRequest, defaults: &VaultDefaults) -> MountResult<Self> {
        log_unknown_keys(request);
        let role = request
            .parameter("roleName")
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                invalid(
                    "the parameter \"roleName\" is required: the Vault role to log in as".into(),
                )
            })?
            .to_string();
        let address = match prefixed(request, "Address")? {
            Some((value, key)) if !value.trim().is_empty() => {
                let address =
                    canonical_address(value).map_err(|why| invalid(format!("{key} {why}")))?;
                check_allowed(&address, defaults)?;
                address
            }
            _ => defaults.address.clone().ok_or_else(|| {
                invalid(
                    "no Vault address: set \"vaultAddress\" or start the provider with --vault-addr"
                        .into(),
                )
            })?,
        };
        let uses_openbao = request.parameters.keys().any(|k| k.starts_with("openbao"));
        let uses_vault = request.parameters.keys().any(|k| k.starts_with("vault"));
        let default_audience = if uses_openbao && !uses_vault {
            "openbao"
        } else {
            "vault"
        };
        let audience = request
            .parameter("audience")
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .unwrap_or(default_audience)
            .to_string();
        Ok(Self {
            role,
            address,
            namespace: match prefixed(request, "Namespace")? {
                Some((value, key)) if !value.trim().is_empty() => {
                    Some(vault_namespace(value.trim(), &key)?)
                }
                _ => defaults.namespace.clone(),
            },
            auth_mount: auth_mount(request, defaults)?,
            audience,
            tls: tls_params(request, defaults)?,
        })
    }
}

fn auth_mount(request: &MountRequest, defaults: &VaultDefaults) -> MountResult<String> {
    let kubernetes_mount = prefixed(request, "KubernetesMountPath")?;
    let auth_mount = prefixed(request, "AuthMountPath")?;
    let auth_mount = match (kubernetes_mount, auth_mount) {
        (Some((_, a)), Some((_, b))) => {
            return Err(invalid(format!("set only one of {a:?} and {b:?}")));
        }
        (Some(found), None) | (None, Some(found)) => found.0.trim().trim_matches('/').to_string(),
        (None, None) => defaults.auth_mount.clone(),
    };
    check_mount(&auth_mount)?;
    Ok(auth_mount)
}

/// The pod's TLS settings over the admin's: pod file paths must lie in `--tls-files-dir`, and turning
/// verification off needs `--allow-insecure-tls`.
fn tls_params(request: &MountRequest, defaults: &VaultDefaults) -> MountResult<TlsParams> {
    let dir = defaults.tls_files_dir.as_deref();
    let file = |suffix: &str, default: &Option<TlsFile>| -> MountResult<Option<TlsFile>> {
        let Some((value, key)) = prefixed(request, suffix)? else {
            return Ok(default.clone());
        };
        if value.trim().is_empty() {
            return Ok(default.clone());
        }
        let file = TlsFile {
            path: value.trim().to_string(),
            named_by: key,
            from_pod: true,
        };
        tls_files::check_allowed(&file, dir)?;
        Ok(Some(file))
    };
    let skip_verify = match prefixed(request, "SkipTLSVerify")? {
        None => defaults.tls.skip_verify,
        Some((value, key)) => {
            let skip = parse_bool(value)
                .ok_or_else(|| invalid(format!("{key} must be \"true\" or \"false\"")))?;
            if skip && !defaults.allow_insecure_tls {
                return Err(MountError::new(
                    ErrorKind::PermissionDenied,
                    Reason::InsecureTlsNotAllowed,
                    format!(
                        "{key}: true turns off the verification of Vault's certificate, which this \
                         provider allows only when started with --allow-insecure-tls; set a CA instead \
                         (the provider's --vault-ca-cert, or a file in its {TLS_FILES_DIR_FLAG})"
                    ),
                ));
            }
            skip
        }
    };
    let tls = TlsParams {
        ca_cert: file("CACertPath", &defaults.tls.ca_cert)?,
        ca_directory: file("CADirectory", &defaults.tls.ca_directory)?,
        server_name: match prefixed(request, "TLSServerName")? {
            Some((value, key)) if !value.trim().is_empty() => Some(dns_name(value.trim(), &key)?),
            _ => defaults.tls.server_name.clone(),
        },
        client_cert: file("TLSClientCertPath", &defaults.tls.client_cert)?,
        client_key: file("TLSClientKeyPath", &defaults.tls.client_key)?,
        skip_verify,
    };
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        return Err(invalid(
            "set both vaultTLSClientCertPath and vaultTLSClientKeyPath, or neither".into(),
        ));
    }
    Ok(tls)
}

/// A Vault namespace (sent as `X-Vault-Namespace`): path segments of letters, digits, `-`, `_` and `.`
/// (not `.` or `..` alone).
fn vault_namespace(value: &str, key: &str) -> MountResult<String> {
    let segment_ok = |segment: &str| {
        !matches!(segment, "" | "." | "..")
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let trimmed = value.trim_matches('/');
    if trimmed.len() > 1024 || !trimmed.split('/').all(segment_ok) {
        let shown: String = value.chars().take(64).collect();
        return Err(invalid(format!(
            "{key} {shown:?} is not a Vault namespace such as \"team-a\" or \"org/team-a\""
        )));
    }
    Ok(trimmed.to_string())
}

/// A TLS server name must be a DNS name. The request is sent to it (resolved to the address's own
/// host), so an IP literal would send it, with the pod's Vault token, to a host the allow-list never saw.
fn dns_name(value: &str, key: &str) -> MountResult<String> {
    let is_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let name = value.trim_end_matches('.').to_ascii_lowercase();
    // The URL parser reads `0x7f000001`, `127.1` or `10.0.0.0x5` as IPv4 addresses: only a name it
    // keeps as a domain is one.
    let parsed_as_domain = reqwest::Url::parse(&format!("https://{name}/"))
        .ok()
        .is_some_and(|url| url.domain() == Some(name.as_str()));
    if name.len() > 253 || !name.split('.').all(is_label) || !parsed_as_domain {
        let shown: String = value.chars().take(64).collect();
        return Err(invalid(format!(
            "{key} {shown:?} is not a DNS name (IP addresses are not accepted: set vaultAddress instead)"
        )));
    }
    Ok(name)
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "t" | "yes" => Some(true),
        "false" | "0" | "f" | "no" | "" => Some(false),
        _ => None,
    }
}

/// A Vault address in one form, so that two spellings of one server compare equal: `scheme://host:port`
/// (scheme and host lower-case, the port always written) for `http`/`https`, or `unix:///absolute/path`
/// for a Vault or OpenBao Agent listener on the node. Anything that could hide where a request goes — a
/// path other than `/`, a query, a fragment, user info — is refused. The error says why, never echoing
/// more than a bounded prefix.
pub fn canonical_address(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    // User information may be a password: such an address is never echoed.
    let shown: String = if trimmed.contains('@') {
        "(an address with user information)".into()
    } else {
        format!("{:?}", trimmed.chars().take(128).collect::<String>())
    };
    if let Some(path) = trimmed.strip_prefix("unix://") {
        let path = std::path::Path::new(path);
        let clean = path.is_absolute()
            && path.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            })
            && !trimmed.contains(['?', '#']);
        if !clean {
            return Err(format!(
                "{shown} is not unix:// followed by an absolute, clean socket path"
            ));
        }
        return Ok(format!("unix://{}", path.display()));
    }
    let url = reqwest::Url::parse(trimmed)
        .map_err(|_| format!("{shown} is not an http://, https:// or unix:// URL"))?;
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "{shown} is not an http://, https:// or unix:// URL"
        ));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(format!("{shown} has no host"));
    };
    if trimmed.contains('@') || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{shown}: name the server only, without user information"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
        return Err(format!(
            "{shown} has a path, query or fragment: give scheme, host and port only"
        ));
    }
    let port = url.port_or_known_default().unwrap_or(8200);
    Ok(format!("{scheme}://{host}:{port}"))
}

/// Pods can set `vaultAddress` through volumeAttributes: only the provider's own address and those its
/// admin allows are used, so a pod cannot send the provider (and its token) to a server of its choosing.
fn check_allowed(address: &str, defaults: &VaultDefaults) -> MountResult<()> {
    let allowed = defaults.address.as_deref() == Some(address)
        || (defaults.allowed == AllowedAddresses::AnyHttp && !address.starts_with("unix://"))
        || defaults.allowed_addresses.iter().any(|a| a == address);
    if allowed {
        return Ok(());
    }
    Err(MountError::new(
        ErrorKind::PermissionDenied,
        Reason::VaultAddressNotAllowed,
        format!(
            "Vault address {address:?} is neither the provider's --vault-addr nor among its \
             --vault-allowed-addresses"
        ),
    ))
}

fn check_mount(mount: &str) -> MountResult<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if mount.is_empty()
        || !mount.chars().all(allowed)
        || mount
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(invalid(format!(
            "auth mount path {mount:?} is not a mount path such as \"kubernetes\""
        )));
    }
    Ok(())
}

/// An object's request: path (without `/v1/`), query, method and body, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRequest {
    pub path: String,
    pub query: Option<String>,
    pub method: HttpMethod,
    /// The JSON body for writes (`secretArgs`), serialised.
    pub body: Option<String>,
}

/// Whether a request reaches Vault as written. The URL parser folds `.`/`..` segments (also spelled
/// `%2e`), reads backslashes as `/`, drops tabs and newlines and starts a fragment at `#`: any path or
/// query it would rewrite could leave `/v1/`, so only what survives parsing unchanged is accepted (and
/// no empty segments).
fn reaches_vault_as_written(path: &str, query: Option<&str>) -> bool {
    let expected = format!("/v1/{path}");
    let url = match query {
        Some(query) => format!("http://vault{expected}?{query}"),
        None => format!("http://vault{expected}"),
    };
    !path.contains("//")
        && reqwest::Url::parse(&url).is_ok_and(|url| {
            url.path() == expected && url.query() == query && url.fragment().is_none()
        })
}

/// The methods an object may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    Get,
    Put,
    Post,
}

impl SecretRequest {
    /// The request an object makes.
    pub fn of(index: usize, object: &VaultObject) -> MountResult<Self> {
        let field = |name: &str| format!("objects[{index}].{name}");
        let raw = object.secret_path.trim();
        let (path, query) = match raw.split_once('?') {
            Some((path, query)) => (path, Some(query.to_string()).filter(|q| !q.is_empty())),
            None => (raw, None),
        };
        let path = path.trim_start_matches('/');
        let path = path.strip_prefix("v1/").unwrap_or(path);
        if path.is_empty() || !reaches_vault_as_written(path, query.as_deref()) {
            return Err(invalid(format!(
                "{} {:?} is not a Vault API path such as \"secret/data/app\"",
                field("secretPath"),
                object.secret_path
            )));
        }
        let method = match object
            .method
            .as_deref()
            .map(str::trim)
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("") | Some("GET") => HttpMethod::Get,
            Some("PUT") => HttpMethod::Put,
            Some("POST") => HttpMethod::Post,
            Some(other) => {
                return Err(invalid(format!(
                    "{} {other:?} must be GET, PUT or POST",
                    field("method")
                )));
            }
        };
        let body = match (&object.secret_args, method) {
            (None, _) => None,
            (Some(_), HttpMethod::Get) => {
                return Err(invalid(format!(
                    "{} needs method PUT or POST",
                    field("secretArgs")
                )));
            }
            (Some(args), _) => Some(serde_json::to_string(args).unwrap_or_default()),
        };
        Ok(Self {
            path: path.to_string(),
            query,
            method,
            body,
        })
    }

    /// Writes are never cached.
    pub fn is_read(&self) -> bool {
        self.method == HttpMethod::Get
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(parameters: &[(&str, &str)]) -> MountRequest {
        MountRequest {
            parameters: parameters
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn defaults() -> VaultDefaults {
        VaultDefaults {
            address: Some("http://127.0.0.1:8200".into()),
            auth_mount: "kubernetes".into(),
            ..Default::default()
        }
    }

    fn reason(parameters: &[(&str, &str)], defaults: &VaultDefaults) -> Reason {
        VaultParams::parse(&request(parameters), defaults)
            .unwrap_err()
            .reason
    }

    #[test]
    fn addresses_have_one_form() {
        for (given, canonical) in [
            ("http://127.0.0.1:8200", "http://127.0.0.1:8200"),
            ("http://127.0.0.1:8200/", "http://127.0.0.1:8200"),
            ("HTTPS://Vault.Example", "https://vault.example:443"),
            ("https://vault.example:443/", "https://vault.example:443"),
            ("http://[::1]:8200", "http://[::1]:8200"),
            (
                "unix:///run/vault/agent.sock",
                "unix:///run/vault/agent.sock",
            ),
        ] {
            assert_eq!(
                canonical_address(given).as_deref(),
                Ok(canonical),
                "{given}"
            );
        }
        for bad in [
            "vault:8200",
            "ftp://vault:21",
            "http://vault:8200/v1/secret",
            "http://vault:8200?x=1",
            "http://vault:8200#f",
            "http://user:pw@vault:8200",
            "http://@vault:8200",
            "unix://relative.sock",
            "unix:///run/../etc/x",
            "http://",
        ] {
            let error = canonical_address(bad).unwrap_err();
            assert!(!error.contains("pw"), "{error}");
        }
    }

    #[test]
    fn only_the_admins_addresses_are_used() {
        let at = |address: &str| request(&[("roleName", "a"), ("vaultAddress", address)]);
        let mut defaults = defaults();
        assert_eq!(
            VaultParams::parse(&at("http://127.0.0.1:8200/"), &defaults)
                .unwrap()
                .address,
            "http://127.0.0.1:8200",
            "the provider's own address, spelled differently"
        );
        assert!(VaultParams::parse(&request(&[("roleName", "a")]), &defaults).is_ok());
        let error = VaultParams::parse(&at("http://attacker:8200"), &defaults).unwrap_err();
        assert_eq!(error.kind, ErrorKind::PermissionDenied);
        assert!(
            error.message.contains("--vault-allowed-addresses"),
            "{error}"
        );
        assert_eq!(
            reason(
                &[("roleName", "a"), ("vaultAddress", "http://127.0.0.1:8201")],
                &defaults
            ),
            Reason::VaultAddressNotAllowed,
            "another port"
        );
        assert_eq!(
            reason(
                &[
                    ("roleName", "a"),
                    ("vaultAddress", "https://127.0.0.1:8200")
                ],
                &defaults
            ),
            Reason::VaultAddressNotAllowed,
            "another scheme"
        );
        defaults.allowed_addresses = vec!["https://vault.example:8200".into()];
        assert!(VaultParams::parse(&at("https://VAULT.example:8200/"), &defaults).is_ok());
        assert_eq!(
            reason(
                &[
                    ("roleName", "a"),
                    ("vaultAddress", "http://vault.example:8200")
                ],
                &defaults
            ),
            Reason::VaultAddressNotAllowed
        );
        defaults.allowed = AllowedAddresses::AnyHttp;
        assert!(VaultParams::parse(&at("http://anywhere:8200"), &defaults).is_ok());
        assert_eq!(
            reason(
                &[
                    ("roleName", "a"),
                    ("vaultAddress", "unix:///run/agent.sock")
                ],
                &defaults
            ),
            Reason::VaultAddressNotAllowed,
            "'*' never includes a socket on the node"
        );
        assert_eq!(
            reason(
                &[("roleName", "a"), ("vaultAddress", "http://v:8200/x")],
                &defaults
            ),
            Reason::InvalidParameter
        );
    }

    #[test]
    fn tls_files_and_verification_are_the_admins() {
        let base = tempfile::tempdir().unwrap();
        let mut defaults = defaults();
        let ca = |path: &str| request(&[("roleName", "a"), ("vaultCACertPath", path)]);
        let error = VaultParams::parse(&ca("/etc/passwd"), &defaults).unwrap_err();
        assert_eq!(error.kind, ErrorKind::PermissionDenied);
        assert!(error.message.contains("--tls-files-dir"), "{error}");
        defaults.tls_files_dir = Some(Arc::new(TlsFilesDir::open(base.path()).unwrap()));
        let inside = base.path().join("ca.crt");
        let parsed = VaultParams::parse(&ca(&inside.to_string_lossy()), &defaults).unwrap();
        assert!(parsed.tls.ca_cert.unwrap().from_pod);
        assert_eq!(
            reason(
                &[("roleName", "a"), ("vaultCADirectory", "/etc/ssl")],
                &defaults
            ),
            Reason::TlsFileNotAllowed
        );
        let skip = [("roleName", "a"), ("vaultSkipTLSVerify", "true")];
        let error = VaultParams::parse(&request(&skip), &defaults).unwrap_err();
        assert_eq!(error.kind, ErrorKind::PermissionDenied);
        assert!(error.message.contains("--allow-insecure-tls"), "{error}");
        defaults.allow_insecure_tls = true;
        assert!(
            VaultParams::parse(&request(&skip), &defaults)
                .unwrap()
                .tls
                .skip_verify
        );
        defaults.tls.skip_verify = true;
        let off = [("roleName", "a"), ("vaultSkipTLSVerify", "false")];
        assert!(
            !VaultParams::parse(&request(&off), &defaults)
                .unwrap()
                .tls
                .skip_verify
        );
        assert!(
            VaultParams::parse(&request(&[("roleName", "a")]), &defaults)
                .unwrap()
                .tls
                .skip_verify
        );
    }

    #[test]
    fn tls_server_names_are_dns_names_never_ip_addresses() {
        let named = |name: &str| request(&[("roleName", "a"), ("vaultTLSServerName", name)]);
        let parsed = VaultParams::parse(&named("Vault.Internal."), &defaults()).unwrap();
        assert_eq!(parsed.tls.server_name.as_deref(), Some("vault.internal"));
        for name in [
            "169.254.169.254",
            "10.0.0.1",
            "[::1]",
            "::1",
            "0x7f.1",
            "127.1",
            "0x7f000001",
            "0xa9fea9fe",
            "10.0.0.0x5",
            "2130706433",
            "evil%2Eexample",
            "exämple.com",
            "a..b",
            "a/b",
            "a:8200",
            "-a.b",
            "a b",
        ] {
            let error = VaultParams::parse(&named(name), &defaults()).unwrap_err();
            assert_eq!(error.reason, Reason::InvalidParameter, "{name}");
            assert!(error.message.contains("vaultTLSServerName"), "{name}");
        }
    }

    #[test]
    fn vault_and_openbao_spellings() {
        let mut defaults = defaults();
        defaults.allowed = AllowedAddresses::AnyHttp;
        let vault = VaultParams::parse(
            &request(&[
                ("roleName", "app"),
                ("vaultAddress", "https://v:8200/"),
                ("vaultAuthMountPath", "jwt"),
            ]),
            &defaults,
        )
        .unwrap();
        assert_eq!(
            (
                vault.address.as_str(),
                vault.auth_mount.as_str(),
                vault.audience.as_str()
            ),
            ("https://v:8200", "jwt", "vault")
        );
        let bao = VaultParams::parse(
            &request(&[
                ("roleName", "app"),
                ("openbaoAddress", "http://b:8200"),
                ("openbaoNamespace", "team"),
                ("audience", ""),
            ]),
            &defaults,
        )
        .unwrap();
        assert_eq!(
            (bao.audience.as_str(), bao.namespace.as_deref()),
            ("openbao", Some("team")),
            "an empty audience is the default one"
        );
        let defaulted = VaultParams::parse(
            &request(&[("roleName", "app"), ("someOtherAttribute", "x")]),
            &defaults,
        )
        .unwrap();
        assert_eq!(
            defaulted.auth_mount, "kubernetes",
            "unknown keys are ignored"
        );
    }

    #[test]
    fn refuses_conflicting_and_bad_values_by_name() {
        let cases: [(&[(&str, &str)], &str); 11] = [
            (
                &[
                    ("roleName", "a"),
                    ("vaultAddress", "http://a"),
                    ("openbaoAddress", "http://b"),
                ],
                "openbaoAddress",
            ),
            (
                &[
                    ("roleName", "a"),
                    ("vaultKubernetesMountPath", "k"),
                    ("vaultAuthMountPath", "j"),
                ],
                "vaultAuthMountPath",
            ),
            (
                &[("roleName", "a"), ("vaultSkipTLSVerify", "maybe")],
                "vaultSkipTLSVerify",
            ),
            (
                &[("roleName", "a"), ("vaultAddress", "vault:8200")],
                "vault:8200",
            ),
            (&[("vaultAddress", "http://a")], "roleName"),
            (&[("roleName", "a"), ("vaultAuthMountPath", "../x")], "../x"),
            (
                &[
                    ("roleName", "a"),
                    ("vaultAuthMountPath", "k/%2e%2e/%2e%2e/agent/v1/quit?"),
                ],
                "auth mount path",
            ),
            (
                &[("roleName", "a"), ("vaultAuthMountPath", "k\t/x")],
                "auth mount path",
            ),
            (
                &[("roleName", "a"), ("vaultNamespace", "team\r\nX-Evil: 1")],
                "vaultNamespace",
            ),
            (
                &[("roleName", "a"), ("vaultNamespace", "org/../root")],
                "vaultNamespace",
            ),
            (
                &[("roleName", "a"), ("vaultNamespace", "a b")],
                "vaultNamespace",
            ),
        ];
        for (parameters, named) in cases {
            let error = VaultParams::parse(&request(parameters), &defaults()).unwrap_err();
            assert_eq!(error.reason, Reason::InvalidParameter);
            assert!(error.message.contains(named), "{named}: {}", error.message);
        }
    }

    fn object(path: &str, method: Option<&str>, args: bool) -> VaultObject {
        VaultObject {
            object_name: "o".into(),
            secret_path: path.into(),
            secret_key: None,
            method: method.map(Into::into),
            secret_args: args
                .then(|| BTreeMap::from([("common_name".to_string(), serde_json::json!("a"))])),
            encoding: Encoding::Utf8,
            file_permission: None,
            optional: false,
            object_version: None,
        }
    }

    #[test]
    fn secret_requests() {
        let versioned =
            SecretRequest::of(0, &object("/v1/secret/data/app?version=2", None, false)).unwrap();
        assert_eq!(
            (versioned.path.as_str(), versioned.query.as_deref()),
            ("secret/data/app", Some("version=2"))
        );
        let issue = SecretRequest::of(0, &object("pki/issue/web", Some("put"), true)).unwrap();
        assert_eq!(issue.method, HttpMethod::Put);
        assert_eq!(issue.body.as_deref(), Some(r#"{"common_name":"a"}"#));
        assert!(!issue.is_read());
        for (path, method, args) in [
            ("../sys", None, false),
            ("secret/%2e%2e/%2E%2e/sys/metrics", None, false),
            ("secret/.%2e/x", None, false),
            ("secret\\..\\..\\sys", None, false),
            ("secret/./x", None, false),
            ("x/.\t./.\t./agent/v1/quit", Some("POST"), false),
            ("x/.\n./sys", None, false),
            ("x/%2\te%2e/sys", None, false),
            ("secret/a b", None, false),
            ("secret/a#frag", None, false),
            ("secret/a?x=1#frag", None, false),
            ("secret/a?x=\r\ny", None, false),
            ("", None, false),
            ("a", Some("DELETE"), false),
            ("a", None, true),
        ] {
            assert!(
                SecretRequest::of(3, &object(path, method, args))
                    .unwrap_err()
                    .message
                    .contains("objects[3]")
            );
        }
    }
}
