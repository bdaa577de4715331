//! The `objects` parameter shared by every backend: a YAML list of entries, as the official Vault and
//! GCP providers write it, or the driver's `array:` form (a list of YAML strings, one entry each).

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{MountError, MountResult};
use crate::request::MountRequest;

/// The parameter holding the object list.
pub const OBJECTS_PARAMETER: &str = "objects";

/// Default upper bound on objects in one mount.
pub const DEFAULT_MAX_OBJECTS: usize = 1000;

#[derive(Deserialize)]
struct ArrayForm {
    array: Vec<String>,
}

/// Parses `objects` into the backend's entry type, refusing an empty list and more than `max_objects`.
pub fn parse_objects<T: DeserializeOwned>(
    request: &MountRequest,
    max_objects: usize,
) -> MountResult<Vec<T>> {
    let text = request.parameter(OBJECTS_PARAMETER).unwrap_or("").trim();
    if text.is_empty() {
        return Err(MountError::invalid(
            "MissingObjects",
            "the parameter \"objects\" is missing or empty: list at least one object",
        ));
    }
    let entries = if text.starts_with("array:") {
        let wrapped: ArrayForm = parse_yaml(text, "objects")?;
        check_count(wrapped.array.len(), max_objects)?;
        wrapped
            .array
            .iter()
            .enumerate()
            .map(|(i, entry)| parse_yaml(entry, &format!("objects.array[{i}]")))
            .collect::<MountResult<Vec<T>>>()?
    } else {
        let entries: Vec<T> = parse_yaml(text, "objects")?;
        check_count(entries.len(), max_objects)?;
        entries
    };
    if entries.is_empty() {
        return Err(MountError::invalid(
            "MissingObjects",
            "the parameter \"objects\" is an empty list: list at least one object",
        ));
    }
    Ok(entries)
}

fn check_count(count: usize, max_objects: usize) -> MountResult<()> {
    if count > max_objects {
        return Err(MountError::invalid(
            "TooManyObjects",
            format!(
                "\"objects\" lists {count} entries; one mount may hold at most {max_objects} \
                 (provider flag --max-objects)"
            ),
        ));
    }
    Ok(())
}

fn parse_yaml<T: DeserializeOwned>(text: &str, what: &str) -> MountResult<T> {
    serde_saphyr::from_str(text).map_err(|e| {
        MountError::invalid(
            "InvalidObjects",
            format!(
                "{what} is not a valid YAML list of objects: {}",
                one_line(&e.to_string())
            ),
        )
    })
}

/// Error texts of the YAML parser span lines with a source excerpt; keep the first line, bounded.
fn one_line(text: &str) -> String {
    let first = text.lines().next().unwrap_or("");
    first.chars().take(300).collect()
}
