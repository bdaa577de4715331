//! Parameters of the `gcp` backend, with the GCP provider's names, so moving from `provider: gcp` is
//! `provider: openclaw` + `backend: gcp`.
//!
//! Top level: `secrets` (a YAML list) and `auth` (`pod-adc`, the default, or `provider-adc`). Each entry
//! of `secrets`: `resourceName` (a Secret Manager version, global or regional, or a Parameter Manager
//! version), `path` (or the older `fileName`), `mode` (`0400` is octal), `extractJSONKey` or
//! `extractYAMLKey` (a nested path `a.b.c`; an exact top-level key containing dots wins), and, beyond
//! the official provider, `encoding` (`base64`, `hex`). Every name part of `resourceName` is checked
//! against Google's character rules, so nothing a pod writes reaches a URL or a host name unchecked.

use std::fmt;

use serde::Deserialize;

use crate::error::{MountError, MountResult, Reason};
use crate::file_mode::FileMode;
use crate::request::MountRequest;
use crate::transform::Encoding;

/// The parameter holding the list of secrets.
pub const SECRETS_PARAMETER: &str = "secrets";
/// Top-level keys this backend reads.
pub const PARAMETER_NAMES: [&str; 2] = [SECRETS_PARAMETER, "auth"];

/// Longest project id or number (ids are at most 30 characters; domain-scoped ones are longer).
const MAX_PROJECT_LEN: usize = 100;
/// Longest location (`europe-west4`, `global`).
const MAX_LOCATION_LEN: usize = 63;
/// Longest secret or parameter id (Secret Manager allows 255).
const MAX_ID_LEN: usize = 255;
/// Longest version (a number, `latest`, an alias or a Parameter Manager version id).
const MAX_VERSION_LEN: usize = 63;
/// Longest extraction path.
const MAX_KEY_LEN: usize = 1024;

fn invalid(message: impl fmt::Display) -> MountError {
    MountError::invalid(Reason::InvalidParameter, message)
}

/// Whose credentials read the secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Auth {
    /// The pod's own identity (Workload Identity or federation).
    #[default]
    PodAdc,
    /// The provider's own credentials (refused unless the admin allows it).
    ProviderAdc,
}

/// The top-level parameters of one mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpParams {
    pub auth: Auth,
}

impl GcpParams {
    pub fn parse(request: &MountRequest) -> MountResult<Self> {
        let auth = match request.parameter("auth").map(str::trim) {
            None | Some("") | Some("pod-adc") => Auth::PodAdc,
            Some("provider-adc") => Auth::ProviderAdc,
            Some(_) => return Err(invalid("auth must be \"pod-adc\" or \"provider-adc\"")),
        };
        Ok(Self { auth })
    }
}

/// The API a resource belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    SecretManager,
    ParameterManager,
}

/// A checked `resourceName`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resource {
    pub service: Service,
    pub project: String,
    /// `None`: a global Secret Manager secret.
    pub location: Option<String>,
    /// The secret or parameter id.
    pub id: String,
    pub version: String,
}

impl Resource {
    /// Parses `projects/P/secrets/S/versions/V`, `projects/P/locations/L/secrets/S/versions/V` or
    /// `projects/P/locations/L/parameters/X/versions/V`.
    pub fn parse(field: &str, text: &str) -> MountResult<Self> {
        let parts: Vec<&str> = text.trim().split('/').collect();
        let shape = || {
            let shown: String = text.chars().take(80).collect();
            invalid(format!(
                "{field} {shown:?} is not a resource name of the form \
                 projects/P/secrets/S/versions/V, projects/P/locations/L/secrets/S/versions/V or \
                 projects/P/locations/L/parameters/X/versions/V"
            ))
        };
        let (service, project, location, id, version) = match parts.as_slice() {
            ["projects", p, "secrets", s, "versions", v] => {
                (Service::SecretManager, *p, None, *s, *v)
            }
            ["projects", p, "locations", l, "secrets", s, "versions", v] => {
                (Service::SecretManager, *p, Some(*l), *s, *v)
            }
            [
                "projects",
                p,
                "locations",
                l,
                "parameters",
                x,
                "versions",
                v,
            ] => (Service::ParameterManager, *p, Some(*l), *x, *v),
            _ => return Err(shape()),
        };
        check_project(field, project)?;
        if let Some(location) = location {
            check_location(field, location)?;
        }
        check_part(field, "id", id, MAX_ID_LEN)?;
        check_part(field, "version", version, MAX_VERSION_LEN)?;
        Ok(Self {
            service,
            project: project.to_string(),
            location: location.map(str::to_string),
            id: id.to_string(),
            version: version.to_string(),
        })
    }

    /// The resource's path in the API (`projects/…/versions/V`).
    pub fn path(&self) -> String {
        let kind = match self.service {
            Service::SecretManager => "secrets",
            Service::ParameterManager => "parameters",
        };
        match &self.location {
            None => format!(
                "projects/{}/{kind}/{}/versions/{}",
                self.project, self.id, self.version
            ),
            Some(location) => format!(
                "projects/{}/locations/{location}/{kind}/{}/versions/{}",
                self.project, self.id, self.version
            ),
        }
    }

    /// A Secret Manager version pinned by number: its data never changes.
    pub fn is_pinned(&self) -> bool {
        self.service == Service::SecretManager && self.version.bytes().all(|b| b.is_ascii_digit())
    }
}

/// A project id (`acme-prod`), number (`123456789012`) or domain-scoped id (`example.com:acme`).
fn check_project(field: &str, project: &str) -> MountResult<()> {
    let ok = !project.is_empty()
        && project.len() <= MAX_PROJECT_LEN
        && project.starts_with(|c: char| c.is_ascii_alphanumeric())
        && project.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b':')
        });
    if !ok {
        return Err(invalid(format!(
            "{field}: the project is not a project id or number (lowercase letters, digits, -)"
        )));
    }
    Ok(())
}

/// A location (`us-central1`, `global`): it becomes part of a host name.
pub fn check_location(field: &str, location: &str) -> MountResult<()> {
    let ok = !location.is_empty()
        && location.len() <= MAX_LOCATION_LEN
        && location.starts_with(|c: char| c.is_ascii_lowercase())
        && !location.ends_with('-')
        && location
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(invalid(format!(
            "{field}: the location is not a location name such as \"us-central1\""
        )));
    }
    Ok(())
}

/// A secret, parameter or version id: letters, digits, `-` and `_`.
fn check_part(field: &str, what: &str, part: &str, max: usize) -> MountResult<()> {
    let ok = !part.is_empty()
        && part.len() <= max
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(invalid(format!(
            "{field}: the {what} must be 1 to {max} letters, digits, - or _"
        )));
    }
    Ok(())
}

/// What part of a payload a file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extract {
    Json(String),
    Yaml(String),
}

impl Extract {
    /// The planned object's key: the format and the path (see [`Extract::from_key`]).
    pub fn key(&self) -> String {
        match self {
            Self::Json(path) => format!("json:{path}"),
            Self::Yaml(path) => format!("yaml:{path}"),
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        if let Some(path) = key.strip_prefix("json:") {
            return Some(Self::Json(path.to_string()));
        }
        key.strip_prefix("yaml:")
            .map(|path| Self::Yaml(path.to_string()))
    }
}

/// One entry of `secrets`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpSecret {
    #[serde(default)]
    pub resource_name: String,
    pub path: Option<String>,
    pub file_name: Option<String>,
    pub mode: Option<FileMode>,
    #[serde(rename = "extractJSONKey")]
    pub extract_json_key: Option<String>,
    #[serde(rename = "extractYAMLKey")]
    pub extract_yaml_key: Option<String>,
    #[serde(default)]
    pub encoding: Encoding,
}

/// An entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSecret {
    pub resource: Resource,
    pub path: String,
    /// The field `path` came from.
    pub path_field: String,
    pub extract: Option<Extract>,
}

impl GcpSecret {
    /// Checks entry `index`: its resource, its file and what it extracts.
    pub fn check(&self, index: usize) -> MountResult<CheckedSecret> {
        let field = |name: &str| format!("secrets[{index}].{name}");
        if self.resource_name.trim().is_empty() {
            return Err(invalid(format!("{} is missing", field("resourceName"))));
        }
        let resource = Resource::parse(&field("resourceName"), &self.resource_name)?;
        fn blank(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let (path, path_field) = match (blank(&self.path), blank(&self.file_name)) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "{} sets both path and fileName: keep path (fileName is its older name)",
                    field("").trim_end_matches('.')
                )));
            }
            (Some(path), None) => (path.to_string(), field("path")),
            (None, Some(name)) => (name.to_string(), field("fileName")),
            (None, None) => {
                return Err(invalid(format!(
                    "{} has no path: name the file it is written to",
                    field("").trim_end_matches('.')
                )));
            }
        };
        let extract = match (blank(&self.extract_json_key), blank(&self.extract_yaml_key)) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "{} sets both extractJSONKey and extractYAMLKey: choose one",
                    field("").trim_end_matches('.')
                )));
            }
            (Some(key), None) => Some(Extract::Json(check_key(&field("extractJSONKey"), key)?)),
            (None, Some(key)) => Some(Extract::Yaml(check_key(&field("extractYAMLKey"), key)?)),
            (None, None) => None,
        };
        Ok(CheckedSecret {
            resource,
            path,
            path_field,
            extract,
        })
    }
}

fn check_key(field: &str, key: &str) -> MountResult<String> {
    if key.len() > MAX_KEY_LEN || key.contains('\0') {
        return Err(invalid(format!(
            "{field} must be at most {MAX_KEY_LEN} bytes"
        )));
    }
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(yaml: &str) -> GcpSecret {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn resource_names_of_each_form_parse_and_print_back() {
        for (text, service, location, pinned) in [
            (
                "projects/acme-prod/secrets/db/versions/latest",
                Service::SecretManager,
                None,
                false,
            ),
            (
                "projects/123456789012/secrets/db/versions/7",
                Service::SecretManager,
                None,
                true,
            ),
            (
                "projects/acme-prod/locations/europe-west4/secrets/tls/versions/7",
                Service::SecretManager,
                Some("europe-west4"),
                true,
            ),
            (
                "projects/acme-prod/locations/global/parameters/cfg/versions/v12",
                Service::ParameterManager,
                Some("global"),
                false,
            ),
        ] {
            let resource = Resource::parse("f", text).unwrap();
            assert_eq!(resource.service, service);
            assert_eq!(resource.location.as_deref(), location);
            assert_eq!(resource.is_pinned(), pinned, "{text}");
            assert_eq!(resource.path(), text);
        }
    }

    #[test]
    fn hostile_resource_names_are_refused() {
        for text in [
            "",
            "projects/p/secrets/s",
            "projects/p/secrets/s/versions/1/extra",
            "projects/p/locations/evil.example.com/secrets/s/versions/1",
            "projects/p/locations/us-central1@evil/secrets/s/versions/1",
            "projects/p/locations/-x/secrets/s/versions/1",
            "projects/P_UPPER/secrets/s/versions/1",
            "projects/p/secrets/../versions/1",
            "projects/p/secrets/s%2F/versions/1",
            "projects/p/secrets/s/versions/1?alt=media",
            "projects/p/secrets/s/versions/1#x",
            "projects/p/secrets/s/versions/",
            "projects//secrets/s/versions/1",
            "https://evil/projects/p/secrets/s/versions/1",
            "projects/p/keys/s/versions/1",
        ] {
            let error = Resource::parse("secrets[0].resourceName", text).unwrap_err();
            assert_eq!(error.reason, Reason::InvalidParameter, "{text}");
        }
        let long = format!("projects/p/secrets/{}/versions/1", "a".repeat(256));
        assert!(Resource::parse("f", &long).is_err());
    }

    #[test]
    fn entries_check_their_file_and_extraction() {
        let checked = entry(
            "resourceName: projects/p/secrets/s/versions/latest\npath: db/password\n\
             extractJSONKey: a.b\nmode: 0400\n",
        );
        assert_eq!(checked.mode, Some(FileMode(0o400)));
        let checked = checked.check(0).unwrap();
        assert_eq!(checked.path, "db/password");
        assert_eq!(checked.extract, Some(Extract::Json("a.b".into())));
        let old = entry("resourceName: projects/p/secrets/s/versions/1\nfileName: f\n")
            .check(1)
            .unwrap();
        assert_eq!(old.path_field, "secrets[1].fileName");
        for (yaml, says) in [
            (
                "resourceName: projects/p/secrets/s/versions/1\npath: a\nfileName: b\n",
                "both path and fileName",
            ),
            ("resourceName: projects/p/secrets/s/versions/1\n", "no path"),
            ("path: a\n", "resourceName is missing"),
            (
                "resourceName: projects/p/secrets/s/versions/1\npath: a\nextractJSONKey: k\n\
                 extractYAMLKey: k\n",
                "choose one",
            ),
        ] {
            let error = entry(yaml).check(0).unwrap_err();
            assert!(error.message.contains(says), "{yaml}: {}", error.message);
        }
        assert!(
            serde_saphyr::from_str::<GcpSecret>("resourceName: x\npathh: a\n").is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn extraction_keys_round_trip() {
        for extract in [Extract::Json("a.b".into()), Extract::Yaml("x".into())] {
            assert_eq!(Extract::from_key(&extract.key()), Some(extract));
        }
        assert_eq!(Extract::from_key("other"), None);
    }
}
