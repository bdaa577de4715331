//! The `objects` parameter shared by every backend (the GCP backend's is named `secrets`): a YAML list
//! of entries, as the official Vault and GCP providers write it, or the driver's `array:` form (a list of
//! YAML strings, one entry each).
//!
//! Every pod of a workload sends the same `objects` text, and YAML parsing was the largest single cost of
//! a file-backend mount (about a fifth of the provider's CPU), so [`ObjectListCache`] keeps recent parse
//! results, keyed by the exact text (parsing is a pure function of it; failures are never kept).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{MountError, MountResult, Reason};
use crate::request::MountRequest;

/// The parameter holding the object list.
pub const OBJECTS_PARAMETER: &str = "objects";

/// Default upper bound on objects in one mount.
pub const DEFAULT_MAX_OBJECTS: usize = 1000;

#[derive(Deserialize)]
struct ArrayForm {
    array: Vec<String>,
}

/// Texts longer than this are parsed every time (bounds the cache's memory with its entry count).
const MAX_CACHED_TEXT: usize = 16 * 1024;
/// Entries kept.
const CACHE_ENTRIES: usize = 128;

/// Recently parsed `objects` lists of one backend.
pub struct ObjectListCache<T> {
    /// The parameter holding the list.
    parameter: &'static str,
    max_objects: usize,
    entries: Mutex<HashMap<String, Arc<Vec<T>>>>,
}

impl<T: DeserializeOwned> ObjectListCache<T> {
    pub fn new(max_objects: usize) -> Self {
        Self::of_parameter(OBJECTS_PARAMETER, max_objects)
    }

    /// A cache of the list in `parameter`.
    pub fn of_parameter(parameter: &'static str, max_objects: usize) -> Self {
        Self {
            parameter,
            max_objects,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The request's `objects`, parsed (or as parsed before from the same text).
    pub fn parse(&self, request: &MountRequest) -> MountResult<Arc<Vec<T>>> {
        let text = request.parameter(self.parameter).unwrap_or("");
        if let Some(hit) = self.lock().get(text) {
            return Ok(hit.clone());
        }
        let parsed = Arc::new(parse_objects_text(text, self.parameter, self.max_objects)?);
        if text.len() <= MAX_CACHED_TEXT {
            let mut entries = self.lock();
            if entries.len() >= CACHE_ENTRIES
                && let Some(old) = entries.keys().next().cloned()
            {
                entries.remove(&old);
            }
            entries.insert(text.to_string(), parsed.clone());
        }
        Ok(parsed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<T>>>> {
        // A panic while holding the lock cannot leave the map inconsistent: take it anyway.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Parses the list in `parameter` into the backend's entry type, refusing an empty list and more than
/// `max_objects`.
fn parse_objects_text<T: DeserializeOwned>(
    text: &str,
    parameter: &str,
    max_objects: usize,
) -> MountResult<Vec<T>> {
    let text = text.trim();
    if text.is_empty() {
        return Err(MountError::invalid(
            Reason::MissingObjects,
            format!("the parameter {parameter:?} is missing or empty: list at least one object"),
        ));
    }
    let entries = if text.starts_with("array:") {
        let wrapped: ArrayForm = parse_yaml(text, parameter)?;
        check_count(wrapped.array.len(), parameter, max_objects)?;
        wrapped
            .array
            .iter()
            .enumerate()
            .map(|(i, entry)| parse_yaml(entry, &format!("{parameter}.array[{i}]")))
            .collect::<MountResult<Vec<T>>>()?
    } else {
        let entries: Vec<T> = parse_yaml(text, parameter)?;
        check_count(entries.len(), parameter, max_objects)?;
        entries
    };
    if entries.is_empty() {
        return Err(MountError::invalid(
            Reason::MissingObjects,
            format!("the parameter {parameter:?} is an empty list: list at least one object"),
        ));
    }
    Ok(entries)
}

fn check_count(count: usize, parameter: &str, max_objects: usize) -> MountResult<()> {
    if count > max_objects {
        return Err(MountError::invalid(
            Reason::TooManyObjects,
            format!(
                "{parameter:?} lists {count} entries; one mount may hold at most {max_objects} \
                 (provider flag --max-objects)"
            ),
        ));
    }
    Ok(())
}

fn parse_yaml<T: DeserializeOwned>(text: &str, what: &str) -> MountResult<T> {
    serde_saphyr::from_str(text).map_err(|e| {
        MountError::invalid(
            Reason::InvalidObjects,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        object_name: String,
    }

    fn request(objects: &str) -> MountRequest {
        MountRequest {
            parameters: BTreeMap::from([(OBJECTS_PARAMETER.to_string(), objects.to_string())]),
            ..Default::default()
        }
    }

    #[test]
    fn parses_both_forms_and_reuses_results_for_the_same_text() {
        let cache = ObjectListCache::<Entry>::new(10);
        let list = cache
            .parse(&request("- objectName: a\n- objectName: b\n"))
            .unwrap();
        assert_eq!(list[1].object_name, "b");
        let again = cache
            .parse(&request("- objectName: a\n- objectName: b\n"))
            .unwrap();
        assert!(Arc::ptr_eq(&list, &again));
        let array = cache
            .parse(&request(
                "array:\n  - |\n    objectName: x\n  - |\n    objectName: y\n",
            ))
            .unwrap();
        assert_eq!(array[0].object_name, "x");
        assert!(!Arc::ptr_eq(&list, &array));
    }

    #[test]
    fn failures_are_not_kept_and_the_cache_is_bounded() {
        let cache = ObjectListCache::<Entry>::new(10);
        assert!(cache.parse(&request("- nope: 1")).is_err());
        assert!(cache.lock().is_empty());
        for i in 0..(CACHE_ENTRIES + 10) {
            cache
                .parse(&request(&format!("- objectName: o{i}")))
                .unwrap();
        }
        assert_eq!(cache.lock().len(), CACHE_ENTRIES);
        let many: String = (0..11).map(|i| format!("- objectName: f{i}\n")).collect();
        assert_eq!(
            cache.parse(&request(&many)).unwrap_err().reason,
            Reason::TooManyObjects
        );
    }
}
