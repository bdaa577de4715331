//! Parameters of the `aws` backend, with the AWS provider's names and validation, so moving from
//! `provider: aws` is `provider: openclaw` + `backend: aws`.
//!
//! Top level: `region`, `failoverRegion`, `pathTranslation`, `usePodIdentity`, `preferredAddressType`,
//! `objects`. Field names inside `objects` entries (and their `jmesPath` and `failoverObject` parts)
//! match without regard to case, as the official provider's JSON decoder does. Every failure is an
//! `InvalidArgument` naming the entry and field, found before any AWS call.
//!
//! File names as the official provider makes them: the alias, or else `objectName`, with `/` replaced by
//! `pathTranslation` (default `_`); with translation off (`"false"`, any case) a leading `/` is dropped
//! and inner `/` make directories.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::error::{MountError, MountResult, Reason};
use crate::file_mode::FileMode;
use crate::request::MountRequest;
use crate::transform::Encoding;

/// Top-level keys this backend reads.
pub const PARAMETER_NAMES: [&str; 5] = [
    "region",
    "failoverRegion",
    "pathTranslation",
    "usePodIdentity",
    "preferredAddressType",
];

/// Longest region name accepted (the longest real ones are about 15 characters).
const MAX_REGION_LEN: usize = 32;
/// Longest `objectName` accepted: Secrets Manager ARNs are at most 2048 characters.
const MAX_OBJECT_NAME_LEN: usize = 2048;
/// Longest version id or label accepted (Secrets Manager allows 64 and 256).
const MAX_SELECTOR_LEN: usize = 256;
/// Longest `jmesPath` expression accepted.
const MAX_JMES_PATH_LEN: usize = 1024;

fn invalid(message: impl fmt::Display) -> MountError {
    MountError::invalid(Reason::InvalidParameter, message)
}

/// Which Pod Identity Agent address to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AddressType {
    /// IPv4, then IPv6.
    #[default]
    Auto,
    Ipv4,
    Ipv6,
}

/// The top-level parameters of one mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsParams {
    /// `region`, when the SecretProviderClass sets one (otherwise the provider's default).
    pub region: Option<String>,
    pub failover_region: Option<String>,
    /// The character `/` becomes in file names; `None`: translation off.
    pub path_translation: Option<char>,
    pub use_pod_identity: bool,
    pub preferred_address: AddressType,
}

impl AwsParams {
    pub fn parse(request: &MountRequest) -> MountResult<Self> {
        let region = optional(request, "region")
            .map(|r| check_region("region", r))
            .transpose()?;
        let failover_region = optional(request, "failoverRegion")
            .map(|r| check_region("failoverRegion", r))
            .transpose()?;
        if failover_region.is_some() && failover_region == region {
            return Err(invalid(
                "failoverRegion must differ from region (it is the region used when region fails)",
            ));
        }
        Ok(Self {
            region,
            failover_region,
            path_translation: path_translation(request.parameter("pathTranslation"))?,
            use_pod_identity: optional(request, "usePodIdentity")
                .map(|v| go_bool("usePodIdentity", v))
                .transpose()?
                .unwrap_or(false),
            preferred_address: match optional(request, "preferredAddressType")
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("auto") => AddressType::Auto,
                Some("ipv4") => AddressType::Ipv4,
                Some("ipv6") => AddressType::Ipv6,
                Some(_) => {
                    return Err(invalid(
                        "preferredAddressType must be one of ipv4, ipv6, auto",
                    ));
                }
            },
        })
    }

    /// The file name of an object or jmesPath entry named `name`.
    pub fn file_name(&self, name: &str) -> String {
        match self.path_translation {
            Some(c) => name.replace('/', c.encode_utf8(&mut [0; 4])),
            None => name.strip_prefix('/').unwrap_or(name).to_string(),
        }
    }
}

/// A parameter's value, `None` when absent or blank.
fn optional<'a>(request: &'a MountRequest, key: &str) -> Option<&'a str> {
    request
        .parameter(key)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A region name: lowercase letters, digits and `-`, starting with a letter (it becomes part of a host
/// name, so nothing else may pass).
pub fn check_region(field: &str, region: &str) -> MountResult<String> {
    let ok = region.len() <= MAX_REGION_LEN
        && region.starts_with(|c: char| c.is_ascii_lowercase())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.ends_with('-');
    if !ok {
        let shown: String = region.chars().take(40).collect();
        return Err(invalid(format!(
            "{field} {shown:?} is not an AWS region name such as \"eu-west-1\""
        )));
    }
    Ok(region.to_string())
}

fn path_translation(value: Option<&str>) -> MountResult<Option<char>> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(Some('_'));
    };
    if value.eq_ignore_ascii_case("false") {
        return Ok(None);
    }
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c != '\0' => Ok(Some(c)),
        _ => Err(invalid(
            "pathTranslation must be one character (the one `/` becomes in file names) or \"False\"",
        )),
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it.
fn go_bool(field: &str, value: &str) -> MountResult<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(invalid(format!("{field} must be \"true\" or \"false\""))),
    }
}

/// The service an object lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    SecretsManager,
    SsmParameter,
}

impl ObjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretsManager => "secretsmanager",
            Self::SsmParameter => "ssmparameter",
        }
    }
}

/// What an ARN says about its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    pub object_type: ObjectType,
    pub region: String,
}

impl Arn {
    /// `arn:PARTITION:secretsmanager|ssm:REGION:ACCOUNT:secret:NAME|parameter/NAME`; `None` when the
    /// name is not an ARN at all, an error when it is one we cannot use.
    pub fn parse(field: &str, name: &str) -> MountResult<Option<Self>> {
        if !name.starts_with("arn:") {
            return Ok(None);
        }
        let parts: Vec<&str> = name.splitn(6, ':').collect();
        let bad = |why: &str| invalid(format!("{field} is an ARN, but {why}"));
        if parts.len() < 6 {
            return Err(bad(
                "not of the form arn:partition:service:region:account:resource",
            ));
        }
        let object_type = match (parts[2], parts[5]) {
            ("secretsmanager", resource) if resource.starts_with("secret:") => {
                ObjectType::SecretsManager
            }
            ("ssm", resource) if resource.starts_with("parameter/") => ObjectType::SsmParameter,
            _ => {
                return Err(bad(
                    "not of a Secrets Manager secret (…:secretsmanager:…:secret:NAME) or an SSM \
                     parameter (…:ssm:…:parameter/NAME)",
                ));
            }
        };
        let region = check_region(&format!("the region of {field}"), parts[3])?;
        Ok(Some(Self {
            object_type,
            region,
        }))
    }
}

/// One `jmesPath` entry: a value cut out of a JSON secret into its own file.
#[derive(Debug, Clone, Default)]
pub struct JmesPathEntry {
    pub path: String,
    pub object_alias: String,
    pub file_permission: Option<FileMode>,
    pub encoding: Encoding,
}

/// The `failoverObject` of an entry: the object as the failover region names it.
#[derive(Debug, Clone, Default)]
pub struct FailoverObject {
    pub object_name: String,
    pub object_version: Option<String>,
    pub object_version_label: Option<String>,
}

/// One entry of `objects`, field names matched without regard to case.
#[derive(Debug, Clone, Default)]
pub struct AwsObject {
    pub object_name: String,
    pub object_type: Option<String>,
    pub object_alias: Option<String>,
    pub object_version: Option<String>,
    pub object_version_label: Option<String>,
    pub file_permission: Option<FileMode>,
    pub jmes_path: Vec<JmesPathEntry>,
    pub failover_object: Option<FailoverObject>,
    pub encoding: Encoding,
}

/// A mapping whose keys match `fields` without regard to case; each field once, no others.
fn visit_fields<'de, A: MapAccess<'de>>(
    mut map: A,
    fields: &[&str],
    mut field: impl FnMut(&str, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    let mut seen = HashSet::new();
    while let Some(key) = map.next_key::<String>()? {
        let Some(name) = fields.iter().find(|f| f.eq_ignore_ascii_case(&key)) else {
            let shown: String = key.chars().take(64).collect();
            return Err(de::Error::custom(format!(
                "unknown field {shown:?}, expected one of {}",
                fields.join(", ")
            )));
        };
        if !seen.insert(*name) {
            return Err(de::Error::custom(format!("field {name:?} is set twice")));
        }
        field(name, &mut map)?;
    }
    Ok(())
}

/// A field that must be a string, given as any YAML scalar (`objectVersion: 3` is the text "3").
fn text<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<String>, A::Error> {
    Ok(map
        .next_value::<Option<Scalar>>()?
        .map(|s| s.0)
        .filter(|s| !s.is_empty()))
}

/// A YAML scalar's text.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_str(ScalarVisitor)
    }
}

fn encoding_field<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Encoding, A::Error> {
    let text = text(map)?.unwrap_or_default();
    Encoding::parse(&text).map_err(de::Error::custom)
}

impl<'de> Deserialize<'de> for AwsObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = AwsObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object entry (objectName, objectType, …)")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AwsObject, A::Error> {
                let mut object = AwsObject::default();
                let mut name = None;
                visit_fields(
                    map,
                    &[
                        "objectName",
                        "objectType",
                        "objectAlias",
                        "objectVersion",
                        "objectVersionLabel",
                        "filePermission",
                        "jmesPath",
                        "failoverObject",
                        "encoding",
                    ],
                    |field, map| {
                        match field {
                            "objectName" => name = text(map)?,
                            "objectType" => object.object_type = text(map)?,
                            "objectAlias" => object.object_alias = text(map)?,
                            "objectVersion" => object.object_version = text(map)?,
                            "objectVersionLabel" => object.object_version_label = text(map)?,
                            "filePermission" => object.file_permission = map.next_value()?,
                            "jmesPath" => {
                                object.jmes_path = map
                                    .next_value::<Option<Vec<JmesPathEntry>>>()?
                                    .unwrap_or_default()
                            }
                            "failoverObject" => object.failover_object = map.next_value()?,
                            _ => object.encoding = encoding_field(map)?,
                        }
                        Ok(())
                    },
                )?;
                object.object_name = name.ok_or_else(|| de::Error::missing_field("objectName"))?;
                Ok(object)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl<'de> Deserialize<'de> for JmesPathEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = JmesPathEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a jmesPath entry {path, objectAlias, filePermission}")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<JmesPathEntry, A::Error> {
                let mut entry = JmesPathEntry::default();
                let (mut path, mut alias) = (None, None);
                visit_fields(
                    map,
                    &["path", "objectAlias", "filePermission", "encoding"],
                    |field, map| {
                        match field {
                            "path" => path = text(map)?,
                            "objectAlias" => alias = text(map)?,
                            "filePermission" => entry.file_permission = map.next_value()?,
                            _ => entry.encoding = encoding_field(map)?,
                        }
                        Ok(())
                    },
                )?;
                entry.path = path.ok_or_else(|| de::Error::missing_field("path"))?;
                entry.object_alias =
                    alias.ok_or_else(|| de::Error::missing_field("objectAlias"))?;
                Ok(entry)
            }
        }
        deserializer.deserialize_map(EntryVisitor)
    }
}

impl<'de> Deserialize<'de> for FailoverObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FailoverVisitor;
        impl<'de> Visitor<'de> for FailoverVisitor {
            type Value = FailoverObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a failoverObject {objectName, objectVersion, objectVersionLabel}")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FailoverObject, A::Error> {
                let mut object = FailoverObject::default();
                let mut name = None;
                visit_fields(
                    map,
                    &["objectName", "objectVersion", "objectVersionLabel"],
                    |field, map| {
                        match field {
                            "objectName" => name = text(map)?,
                            "objectVersion" => object.object_version = text(map)?,
                            _ => object.object_version_label = text(map)?,
                        }
                        Ok(())
                    },
                )?;
                object.object_name = name.ok_or_else(|| de::Error::missing_field("objectName"))?;
                Ok(object)
            }
        }
        deserializer.deserialize_map(FailoverVisitor)
    }
}

/// Where one object is read from in one region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Name or ARN.
    pub name: String,
    pub version: Option<String>,
    pub label: Option<String>,
}

/// One object, checked: its service, targets in the primary and failover regions, and files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedObject {
    pub object_type: ObjectType,
    pub primary: Target,
    pub failover: Option<Target>,
    /// The object's file (its id in the object versions).
    pub file: String,
}

/// Checks an entry as the official provider does (plus the bounds a hostile pod needs), against the
/// regions the mount uses.
pub fn check_object(
    index: usize,
    object: &AwsObject,
    region: &str,
    failover_region: Option<&str>,
    params: &AwsParams,
) -> MountResult<CheckedObject> {
    let field = |name: &str| format!("objects[{index}].{name}");
    let name = object.object_name.trim();
    check_name(&field("objectName"), name)?;
    let arn = Arn::parse(&field("objectName"), name)?;
    let object_type = object_type_of(&field("objectType"), object.object_type.as_deref(), &arn)?;
    if let Some(arn) = &arn
        && arn.region != region
    {
        return Err(invalid(format!(
            "{} is an ARN in region {:?}, but this mount reads region {region:?}: they must match",
            field("objectName"),
            arn.region
        )));
    }
    let primary = Target {
        name: name.to_string(),
        version: check_selector(&field("objectVersion"), object.object_version.as_deref())?,
        label: check_selector(
            &field("objectVersionLabel"),
            object.object_version_label.as_deref(),
        )?,
    };
    check_target_selectors(&field(""), object_type, &primary)?;
    if object_type == ObjectType::SsmParameter && arn.is_none() && name.contains(':') {
        return Err(invalid(format!(
            "{} has a ':': pin an SSM parameter with objectVersion or objectVersionLabel",
            field("objectName")
        )));
    }
    let failover = match (&object.failover_object, failover_region) {
        (None, None) => None,
        (None, Some(failover_region)) if arn.is_some() => {
            return Err(invalid(format!(
                "{} is an ARN in {region:?}; with failoverRegion {failover_region:?} the object needs \
                 a failoverObject naming it there",
                field("objectName")
            )));
        }
        (None, Some(_)) => Some(primary.clone()),
        (Some(_), None) => {
            return Err(invalid(format!(
                "{} is set, but the mount has no failoverRegion",
                field("failoverObject")
            )));
        }
        (Some(failover), Some(failover_region)) => {
            if object.object_alias.is_none() {
                return Err(invalid(format!(
                    "{} needs {} (the file name, which must not depend on the region read)",
                    field("failoverObject"),
                    field("objectAlias")
                )));
            }
            Some(check_failover(
                &field("failoverObject"),
                failover,
                object_type,
                &primary,
                failover_region,
            )?)
        }
    };
    let alias = object.object_alias.as_deref().map(str::trim);
    if let Some(alias) = alias {
        check_name(&field("objectAlias"), alias)?;
    }
    Ok(CheckedObject {
        object_type,
        primary,
        failover,
        file: params.file_name(alias.unwrap_or(name)),
    })
}

fn check_name(field: &str, name: &str) -> MountResult<()> {
    if name.is_empty() {
        return Err(invalid(format!("{field} is missing or empty")));
    }
    if name.len() > MAX_OBJECT_NAME_LEN {
        return Err(invalid(format!(
            "{field} is longer than {MAX_OBJECT_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(format!("{field} contains a control character")));
    }
    if name.split('/').any(|part| part == "..") {
        return Err(invalid(format!("{field} has a '..' path segment")));
    }
    Ok(())
}

fn object_type_of(
    field: &str,
    written: Option<&str>,
    arn: &Option<Arn>,
) -> MountResult<ObjectType> {
    let written = match written.map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("secretsmanager") => Some(ObjectType::SecretsManager),
        Some("ssmparameter") => Some(ObjectType::SsmParameter),
        Some(_) => {
            return Err(invalid(format!(
                "{field} must be \"secretsmanager\" or \"ssmparameter\""
            )));
        }
    };
    match (written, arn) {
        (Some(t), Some(arn)) if t != arn.object_type => Err(invalid(format!(
            "{field} is {:?}, but objectName is an ARN of a {}",
            t.as_str(),
            arn.object_type.as_str()
        ))),
        (Some(t), _) => Ok(t),
        (None, Some(arn)) => Ok(arn.object_type),
        (None, None) => Err(invalid(format!(
            "{field} is missing: write \"secretsmanager\" or \"ssmparameter\" (it may be left out \
             only when objectName is an ARN)"
        ))),
    }
}

fn check_selector(field: &str, value: Option<&str>) -> MountResult<Option<String>> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.len() > MAX_SELECTOR_LEN || value.chars().any(|c| c.is_control() || c == ':') {
        return Err(invalid(format!(
            "{field} must be at most {MAX_SELECTOR_LEN} characters, without ':' or control characters"
        )));
    }
    Ok(Some(value.to_string()))
}

/// SSM: a version is a number, and not both a version and a label.
fn check_target_selectors(
    field: &str,
    object_type: ObjectType,
    target: &Target,
) -> MountResult<()> {
    if object_type != ObjectType::SsmParameter {
        return Ok(());
    }
    if target.version.is_some() && target.label.is_some() {
        return Err(invalid(format!(
            "{field}objectVersion and {field}objectVersionLabel are both set: an SSM parameter is \
             pinned by one of them"
        )));
    }
    if let Some(version) = &target.version
        && (version.len() > 19 || !version.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid(format!(
            "{field}objectVersion must be an SSM parameter version number"
        )));
    }
    Ok(())
}

fn check_failover(
    field: &str,
    failover: &FailoverObject,
    object_type: ObjectType,
    primary: &Target,
    failover_region: &str,
) -> MountResult<Target> {
    let name_field = format!("{field}.objectName");
    let name = failover.object_name.trim();
    check_name(&name_field, name)?;
    if let Some(arn) = Arn::parse(&name_field, name)? {
        if arn.object_type != object_type {
            return Err(invalid(format!(
                "{name_field} is an ARN of a {}, but the object is a {}",
                arn.object_type.as_str(),
                object_type.as_str()
            )));
        }
        if arn.region != failover_region {
            return Err(invalid(format!(
                "{name_field} is an ARN in region {:?}, but failoverRegion is {failover_region:?}",
                arn.region
            )));
        }
    }
    let version = check_selector(
        &format!("{field}.objectVersion"),
        failover.object_version.as_deref(),
    )?;
    let label = check_selector(
        &format!("{field}.objectVersionLabel"),
        failover.object_version_label.as_deref(),
    )?;
    if version
        .as_ref()
        .is_some_and(|v| Some(v) != primary.version.as_ref())
        || label
            .as_ref()
            .is_some_and(|l| Some(l) != primary.label.as_ref())
    {
        return Err(invalid(format!(
            "{field}.objectVersion and .objectVersionLabel must match the object's own (the same \
             version is read in either region)"
        )));
    }
    Ok(Target {
        name: name.to_string(),
        version: primary.version.clone(),
        label: primary.label.clone(),
    })
}

/// A `jmesPath` entry's expression, as written or, for a plain dotted path with `-` in its keys
/// (`openai-api-key`, `db.read-only`), with those keys quoted, so they work unquoted.
pub fn jmes_expression(path: &str) -> String {
    let plain = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if path.contains('-') && path.split('.').all(plain) {
        return path
            .split('.')
            .map(|part| {
                if part.contains('-') || part.starts_with(|c: char| c.is_ascii_digit()) {
                    format!("\"{part}\"")
                } else {
                    part.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(".");
    }
    path.to_string()
}

/// Most brackets and parentheses in one `jmesPath` expression.
const MAX_JMES_NESTING: usize = 32;
/// Largest array index a `jmesPath` expression may name.
const MAX_JMES_INDEX: i32 = 1_000_000;

/// The part of JMESPath a pod may use: field paths, indexes, projections, flattening, filters with
/// comparisons, pipes and `||`/`&&`/`!`. What could build an answer larger than the secret
/// (multi-select lists and hashes, functions such as `join`, literals outside comparisons) or fault the
/// evaluator (slices) is refused: the expression is attacker input evaluated in the provider.
pub fn check_jmes_subset(ast: &jmespath::ast::Ast, depth: usize) -> Result<(), &'static str> {
    use jmespath::ast::Ast;
    if depth > 2 * MAX_JMES_NESTING {
        return Err("is nested too deeply");
    }
    let next = depth + 1;
    match ast {
        Ast::Field { .. } | Ast::Identity { .. } => Ok(()),
        Ast::Index { idx, .. } if idx.unsigned_abs() <= MAX_JMES_INDEX as u32 => Ok(()),
        Ast::Index { .. } => Err("names an array index beyond 1000000"),
        Ast::Subexpr { lhs, rhs, .. }
        | Ast::Projection { lhs, rhs, .. }
        | Ast::And { lhs, rhs, .. }
        | Ast::Or { lhs, rhs, .. } => {
            check_jmes_subset(lhs, next)?;
            check_jmes_subset(rhs, next)
        }
        Ast::Condition {
            predicate, then, ..
        } => {
            check_jmes_subset(predicate, next)?;
            check_jmes_subset(then, next)
        }
        Ast::Flatten { node, .. } | Ast::ObjectValues { node, .. } | Ast::Not { node, .. } => {
            check_jmes_subset(node, next)
        }
        Ast::Comparison { lhs, rhs, .. } => {
            for side in [lhs, rhs] {
                if !matches!(**side, Ast::Literal { .. }) {
                    check_jmes_subset(side, next)?;
                }
            }
            Ok(())
        }
        Ast::Literal { .. } => {
            Err("uses a literal outside a comparison, which the provider refuses")
        }
        Ast::Function { .. } | Ast::Expref { .. } => Err(
            "calls a function, which the provider refuses (use a path, index, filter or projection)",
        ),
        Ast::MultiList { .. } | Ast::MultiHash { .. } => {
            Err("builds a multi-select list or hash, which the provider refuses")
        }
        Ast::Slice { .. } => Err("uses a slice, which the provider refuses (use an index)"),
    }
}

/// Checks a `jmesPath` entry's expression and alias.
pub fn check_jmes_path(field: &str, entry: &JmesPathEntry) -> MountResult<String> {
    let path = entry.path.trim();
    if path.is_empty() || path.len() > MAX_JMES_PATH_LEN {
        return Err(invalid(format!(
            "{field}.path must be a JMESPath expression of 1 to {MAX_JMES_PATH_LEN} characters"
        )));
    }
    let expression = jmes_expression(path);
    let refuse = |why: String| {
        MountError::invalid(
            Reason::InvalidJmesPath,
            format!("{field}.path {path:?} {why}"),
        )
    };
    // The parser recurses on nesting: bound it before parsing.
    if path.bytes().filter(|b| b"([{".contains(b)).count() > MAX_JMES_NESTING {
        return Err(refuse(format!(
            "nests more than {MAX_JMES_NESTING} brackets and parentheses"
        )));
    }
    let compiled = jmespath::compile(&expression).map_err(|error| {
        let detail: String = error
            .to_string()
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        refuse(format!("is not a JMESPath expression: {detail}"))
    })?;
    check_jmes_subset(compiled.as_ast(), 0).map_err(|why| refuse(why.to_string()))?;
    check_name(&format!("{field}.objectAlias"), entry.object_alias.trim())?;
    Ok(expression)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn request(parameters: &[(&str, &str)]) -> MountRequest {
        MountRequest {
            parameters: parameters
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    fn params(parameters: &[(&str, &str)]) -> MountResult<AwsParams> {
        AwsParams::parse(&request(parameters))
    }

    fn objects(yaml: &str) -> Result<Vec<AwsObject>, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    fn check(yaml: &str, parameters: &[(&str, &str)]) -> MountResult<Vec<CheckedObject>> {
        let params = params(parameters)?;
        let list = objects(yaml).map_err(invalid)?;
        list.iter()
            .enumerate()
            .map(|(i, o)| {
                check_object(
                    i,
                    o,
                    "eu-west-1",
                    params.failover_region.as_deref(),
                    &params,
                )
            })
            .collect()
    }

    #[test]
    fn regions_must_be_region_names_because_they_become_host_names() {
        for hostile in [
            "evil.example.com",
            "eu-west-1.evil.com",
            "eu-west-1/",
            "EU-WEST-1",
            "eu west 1",
            "eu-west-1#",
            "-eu",
            "eu-",
            &"a".repeat(33),
        ] {
            let error = params(&[("region", hostile)]).unwrap_err();
            assert_eq!(error.reason, Reason::InvalidParameter, "{hostile}");
        }
        assert_eq!(
            params(&[("region", "us-gov-west-1")])
                .unwrap()
                .region
                .as_deref(),
            Some("us-gov-west-1")
        );
        let same = params(&[("region", "eu-west-1"), ("failoverRegion", "eu-west-1")]);
        assert!(same.unwrap_err().message.contains("failoverRegion"));
    }

    #[test]
    fn top_level_parameters_as_the_official_provider_reads_them() {
        let defaults = params(&[]).unwrap();
        assert_eq!(defaults.path_translation, Some('_'));
        assert!(!defaults.use_pod_identity);
        for off in ["False", "false", "FALSE"] {
            assert_eq!(
                params(&[("pathTranslation", off)])
                    .unwrap()
                    .path_translation,
                None
            );
        }
        assert_eq!(
            params(&[("pathTranslation", "-")])
                .unwrap()
                .path_translation,
            Some('-')
        );
        assert!(params(&[("pathTranslation", "ab")]).is_err());
        assert!(params(&[("pathTranslation", "\0")]).is_err());
        assert!(params(&[("usePodIdentity", "T")]).unwrap().use_pod_identity);
        assert!(params(&[("usePodIdentity", "yes")]).is_err());
        assert_eq!(
            params(&[("preferredAddressType", "IPv6")])
                .unwrap()
                .preferred_address,
            AddressType::Ipv6
        );
        assert!(params(&[("preferredAddressType", "ipv5")]).is_err());
    }

    #[test]
    fn file_names_translate_slashes_or_make_directories() {
        let on = params(&[]).unwrap();
        assert_eq!(on.file_name("/a/b"), "_a_b");
        let dash = params(&[("pathTranslation", "-")]).unwrap();
        assert_eq!(dash.file_name("db/user"), "db-user");
        let off = params(&[("pathTranslation", "false")]).unwrap();
        assert_eq!(off.file_name("/a/b"), "a/b");
    }

    #[test]
    fn entry_fields_match_without_regard_to_case_and_unknown_ones_are_refused() {
        let list = objects(
            "- ObjectName: a\n  OBJECTTYPE: secretsmanager\n  jmesPath:\n    - {Path: x, ObjectAlias: y}\n",
        )
        .unwrap();
        assert_eq!(list[0].object_name, "a");
        assert_eq!(list[0].jmes_path[0].object_alias, "y");
        assert!(
            objects("- objectName: a\n  objectAlais: typo\n")
                .unwrap_err()
                .contains("objectAlais")
        );
        assert!(
            objects("- objectName: a\n  ObjectName: b\n")
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            objects("- objectType: secretsmanager\n")
                .unwrap_err()
                .contains("objectName")
        );
        assert!(
            objects("- objectName: a\n  jmesPath: [{path: x}]\n").is_err(),
            "alias required"
        );
        assert!(objects("- objectName: a\n  encoding: rot13\n").is_err());
        let numeric = objects("- objectName: a\n  objectVersion: 3\n").unwrap();
        assert_eq!(numeric[0].object_version.as_deref(), Some("3"));
    }

    #[test]
    fn the_official_validation_before_any_call() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                "- {objectName: a}\n",
                &[],
                "objects[0].objectType is missing",
            ),
            (
                "- {objectName: a, objectType: kms}\n",
                &[],
                "objects[0].objectType must be",
            ),
            (
                "- {objectName: 'arn:aws:secretsmanager:us-east-1:1:secret:a'}\n",
                &[],
                "region \"us-east-1\"",
            ),
            (
                "- {objectName: 'arn:aws:ssm:eu-west-1:1:parameter/a', objectType: secretsmanager}\n",
                &[],
                "ARN of a ssmparameter",
            ),
            (
                "- {objectName: 'arn:aws:s3:::bucket'}\n",
                &[],
                "is an ARN, but",
            ),
            (
                "- {objectName: a, objectType: ssmparameter, objectVersion: '1', objectVersionLabel: l}\n",
                &[],
                "both set",
            ),
            (
                "- {objectName: a, objectType: ssmparameter, objectVersion: x}\n",
                &[],
                "version number",
            ),
            (
                "- {objectName: ../etc/passwd, objectType: secretsmanager}\n",
                &[],
                "'..'",
            ),
            (
                "- {objectName: a, objectType: secretsmanager, objectAlias: x/../../y}\n",
                &[],
                "'..'",
            ),
            (
                "- {objectName: \"a\\nb\", objectType: secretsmanager}\n",
                &[],
                "control",
            ),
            (
                "- {objectName: a, objectType: secretsmanager, objectVersion: 'v:1'}\n",
                &[],
                "without ':'",
            ),
            (
                "- {objectName: a, objectType: secretsmanager, failoverObject: {objectName: b}}\n",
                &[],
                "no failoverRegion",
            ),
            (
                "- {objectName: '/app/key:1', objectType: ssmparameter}\n",
                &[],
                "has a ':'",
            ),
            (
                "- {objectName: 'arn:aws:secretsmanager:eu-west-1:1:secret:a'}\n",
                &[("failoverRegion", "eu-central-1")],
                "needs a failoverObject",
            ),
            (
                "- {objectName: a, objectType: secretsmanager, failoverObject: {objectName: b}}\n",
                &[("failoverRegion", "eu-central-1")],
                "needs objects[0].objectAlias",
            ),
            (
                "- {objectName: a, objectType: secretsmanager, objectAlias: a, failoverObject: {objectName: 'arn:aws:secretsmanager:eu-west-1:1:secret:b'}}\n",
                &[("failoverRegion", "eu-central-1")],
                "failoverRegion is \"eu-central-1\"",
            ),
            (
                "- {objectName: a, objectType: secretsmanager, objectAlias: a, objectVersionLabel: x, failoverObject: {objectName: b, objectVersionLabel: y}}\n",
                &[("failoverRegion", "eu-central-1")],
                "must match",
            ),
        ];
        for (yaml, parameters, expected) in cases {
            let error = check(yaml, parameters).unwrap_err();
            assert_eq!(
                error.kind,
                crate::error::ErrorKind::InvalidArgument,
                "{yaml}"
            );
            assert!(
                error.message.contains(expected),
                "{yaml}: {}",
                error.message
            );
        }
        let failover = check(
            "- {objectName: a, objectType: secretsmanager, objectAlias: a, failoverObject: {objectName: b}}\n",
            &[("failoverRegion", "eu-central-1")],
        )
        .unwrap();
        assert_eq!(failover[0].failover.as_ref().unwrap().name, "b");
        let inherited = check(
            "- {objectName: a, objectType: secretsmanager}\n",
            &[("failoverRegion", "eu-central-1")],
        )
        .unwrap();
        assert_eq!(inherited[0].failover.as_ref().unwrap().name, "a");
        let arn = check(
            "- {objectName: 'arn:aws:ssm:eu-west-1:1:parameter/p'}\n",
            &[],
        )
        .unwrap();
        assert_eq!(arn[0].object_type, ObjectType::SsmParameter);
    }

    #[test]
    fn jmes_paths_are_checked_and_hyphenated_keys_work_unquoted() {
        assert_eq!(jmes_expression("openai-api-key"), "\"openai-api-key\"");
        assert_eq!(jmes_expression("db.read-only"), "db.\"read-only\"");
        assert_eq!(jmes_expression("plain.key"), "plain.key");
        assert_eq!(jmes_expression("'\"a-b\"'"), "'\"a-b\"'");
        let entry = |path: &str| JmesPathEntry {
            path: path.into(),
            object_alias: "f".into(),
            ..Default::default()
        };
        assert!(check_jmes_path("objects[0].jmesPath[0]", &entry("a.b")).is_ok());
        let error = check_jmes_path("objects[0].jmesPath[1]", &entry("a[")).unwrap_err();
        assert_eq!(error.reason, Reason::InvalidJmesPath);
        assert!(
            error.message.contains("objects[0].jmesPath[1].path"),
            "{}",
            error.message
        );
        let long = check_jmes_path("j", &entry(&"a".repeat(2000))).unwrap_err();
        assert!(long.message.contains("1024"));
        for allowed in [
            "a.b[0].c",
            "items[*].name",
            "items[?kind == 'api'].value | [0]",
            "a || b",
            "values(@)",
        ] {
            let result = check_jmes_path("j", &entry(allowed));
            if allowed == "values(@)" {
                assert!(result.is_err(), "functions are refused");
            } else {
                assert!(result.is_ok(), "{allowed}: {result:?}");
            }
        }
        for (hostile, why) in [
            ("a | join('', [@, @]) | join('', [@, @])", "function"),
            ("@ | [@, @] | [@, @] | [@, @]", "multi-select"),
            ("{a: @, b: @}", "multi-select"),
            ("[@, @][1::2147483647]", "multi-select"),
            ("items[1::2147483647]", "slice"),
            ("a || `\"padding\"`", "literal"),
            ("items[-2147483647]", "index"),
            (&"(".repeat(40), "nests"),
        ] {
            let error = check_jmes_path("j", &entry(hostile)).unwrap_err();
            assert_eq!(error.reason, Reason::InvalidJmesPath, "{hostile}");
            assert!(error.message.contains(why), "{hostile}: {}", error.message);
        }
    }
}
