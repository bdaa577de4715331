//! The Vault backend's SecretProviderClass parameters, in the official Vault provider's spelling
//! (`vaultAddress`, …) and the OpenBao provider's (`openbaoAddress`, …), checked into one [`VaultParams`].
//! Unknown keys and settings given twice are refused by name.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{MountError, MountResult};
use crate::file_mode::FileMode;
use crate::request::MountRequest;
use crate::transform::Encoding;

/// Keys every backend shares or the driver adds.
const COMMON_KEYS: [&str; 3] = ["backend", "objects", "secretProviderClass"];
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

/// TLS settings for talking to Vault; part of the HTTP client's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsParams {
    pub ca_cert_path: Option<String>,
    pub ca_directory: Option<String>,
    pub server_name: Option<String>,
    pub client_cert_path: Option<String>,
    pub client_key_path: Option<String>,
    pub skip_verify: bool,
}

/// The checked parameters of one Vault mount.
#[derive(Debug, Clone)]
pub struct VaultParams {
    pub role: String,
    /// Without a trailing slash.
    pub address: String,
    pub namespace: Option<String>,
    pub auth_mount: String,
    pub audience: String,
    pub tls: TlsParams,
}

/// Provider-wide defaults from flags.
#[derive(Debug, Clone, Default)]
pub struct VaultDefaults {
    pub address: Option<String>,
    pub namespace: Option<String>,
    pub auth_mount: String,
    /// When not empty, the only addresses mounts may use (besides `address`).
    pub allowed_addresses: Vec<String>,
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
    /// Accepted for compatibility; ignored as by the official provider.
    #[serde(default)]
    pub object_version: Option<serde::de::IgnoredAny>,
}

fn invalid(message: String) -> MountError {
    MountError::invalid("InvalidParameter", message)
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

fn non_empty(value: Option<(&str, String)>) -> Option<String> {
    value
        .map(|(v, _)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn check_known_keys(request: &MountRequest) -> MountResult<()> {
    for key in request.parameters.keys() {
        let known = COMMON_KEYS.contains(&key.as_str())
            || IGNORED_KEYS.contains(&key.as_str())
            || key == "roleName"
            || key == "audience"
            || PREFIXED.iter().any(|suffix| {
                key.strip_prefix("vault")
                    .or_else(|| key.strip_prefix("openbao"))
                    == Some(suffix)
            });
        if !known {
            let shown: String = key.chars().take(64).collect();
            return Err(invalid(format!(
                "unknown parameter {shown:?} for the vault backend (see the Vault backend documentation for the accepted keys)"
            )));
        }
    }
    Ok(())
}

impl VaultParams {
    /// Checks the request's parameters against the provider's defaults.
    pub fn parse(request: &MountRequest, defaults: &VaultDefaults) -> MountResult<Self> {
        check_known_keys(request)?;
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
        let address = non_empty(prefixed(request, "Address")?)
            .or_else(|| defaults.address.clone())
            .ok_or_else(|| {
                invalid("no Vault address: set \"vaultAddress\" or start the provider with --vault-addr".into())
            })?;
        let address = check_address(&address)?;
        check_allowed(&address, defaults)?;
        let kubernetes_mount = prefixed(request, "KubernetesMountPath")?;
        let auth_mount = prefixed(request, "AuthMountPath")?;
        let auth_mount = match (kubernetes_mount, auth_mount) {
            (Some((_, a)), Some((_, b))) => {
                return Err(invalid(format!("set only one of {a:?} and {b:?}")));
            }
            (Some(found), None) | (None, Some(found)) => {
                found.0.trim().trim_matches('/').to_string()
            }
            (None, None) => defaults.auth_mount.clone(),
        };
        check_mount(&auth_mount)?;
        let uses_openbao = request.parameters.keys().any(|k| k.starts_with("openbao"));
        let uses_vault = request.parameters.keys().any(|k| k.starts_with("vault"));
        let default_audience = if uses_openbao && !uses_vault {
            "openbao"
        } else {
            "vault"
        };
        let audience = request
            .parameter("audience")
            .map_or(default_audience, str::trim)
            .to_string();
        let skip_verify = match prefixed(request, "SkipTLSVerify")? {
            None => false,
            Some((value, key)) => parse_bool(value)
                .ok_or_else(|| invalid(format!("{key} must be \"true\" or \"false\"")))?,
        };
        Ok(Self {
            role,
            address,
            namespace: non_empty(prefixed(request, "Namespace")?)
                .or_else(|| defaults.namespace.clone()),
            auth_mount,
            audience,
            tls: TlsParams {
                ca_cert_path: non_empty(prefixed(request, "CACertPath")?),
                ca_directory: non_empty(prefixed(request, "CADirectory")?),
                server_name: non_empty(prefixed(request, "TLSServerName")?),
                client_cert_path: non_empty(prefixed(request, "TLSClientCertPath")?),
                client_key_path: non_empty(prefixed(request, "TLSClientKeyPath")?),
                skip_verify,
            },
        })
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "t" | "yes" => Some(true),
        "false" | "0" | "f" | "no" | "" => Some(false),
        _ => None,
    }
}

fn check_address(address: &str) -> MountResult<String> {
    let trimmed = address.trim().trim_end_matches('/');
    let valid = (trimmed.starts_with("http://") || trimmed.starts_with("https://"))
        && reqwest::Url::parse(trimmed).is_ok_and(|url| url.host().is_some());
    if !valid {
        let shown: String = trimmed.chars().take(128).collect();
        return Err(invalid(format!(
            "Vault address {shown:?} is not an http:// or https:// URL with a host"
        )));
    }
    Ok(trimmed.to_string())
}

/// With `--vault-allowed-addresses` set, pods cannot send the provider (and their token) anywhere else.
fn check_allowed(address: &str, defaults: &VaultDefaults) -> MountResult<()> {
    let normal = |a: &str| a.trim().trim_end_matches('/').to_ascii_lowercase();
    let wanted = normal(address);
    let allowed = defaults.allowed_addresses.is_empty()
        || defaults
            .address
            .as_deref()
            .is_some_and(|d| normal(d) == wanted)
        || defaults
            .allowed_addresses
            .iter()
            .any(|a| normal(a) == wanted);
    if allowed {
        return Ok(());
    }
    Err(MountError::new(
        crate::error::ErrorKind::PermissionDenied,
        "VaultAddressNotAllowed",
        format!("Vault address {address:?} is not among the provider's --vault-allowed-addresses"),
    ))
}

fn check_mount(mount: &str) -> MountResult<()> {
    if mount.is_empty()
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
        if path.is_empty() || path.split('/').any(|c| c == ".." || c == ".") || path.contains("//")
        {
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

    #[test]
    fn allowed_addresses_bound_where_pods_can_send_the_provider() {
        let mut defaults = defaults();
        let at = |address: &str| request(&[("roleName", "a"), ("vaultAddress", address)]);
        assert!(
            VaultParams::parse(&at("http://anywhere:8200"), &defaults).is_ok(),
            "no list: any address"
        );
        defaults.allowed_addresses = vec!["https://vault.example:8200/".into()];
        assert!(VaultParams::parse(&at("https://VAULT.example:8200"), &defaults).is_ok());
        assert!(
            VaultParams::parse(&at("http://127.0.0.1:8200"), &defaults).is_ok(),
            "the default address"
        );
        assert!(VaultParams::parse(&request(&[("roleName", "a")]), &defaults).is_ok());
        let error = VaultParams::parse(&at("http://attacker:8200"), &defaults).unwrap_err();
        assert_eq!(error.reason, "VaultAddressNotAllowed");
        assert!(error.message.contains("http://attacker:8200"));
    }

    #[test]
    fn vault_and_openbao_spellings() {
        let vault = VaultParams::parse(
            &request(&[
                ("roleName", "app"),
                ("vaultAddress", "https://v:8200/"),
                ("vaultAuthMountPath", "jwt"),
            ]),
            &defaults(),
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
            ]),
            &defaults(),
        )
        .unwrap();
        assert_eq!(
            (bao.audience.as_str(), bao.namespace.as_deref()),
            ("openbao", Some("team"))
        );
        let defaulted = VaultParams::parse(&request(&[("roleName", "app")]), &defaults()).unwrap();
        assert_eq!(defaulted.auth_mount, "kubernetes");
    }

    #[test]
    fn refuses_unknown_conflicting_and_bad_values_by_name() {
        let cases: [(&[(&str, &str)], &str); 7] = [
            (&[("roleName", "a"), ("vaultAdress", "x")], "vaultAdress"),
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
        ];
        for (parameters, named) in cases {
            let error = VaultParams::parse(&request(parameters), &defaults()).unwrap_err();
            assert_eq!(error.reason, "InvalidParameter");
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
