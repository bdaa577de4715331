//! Turning a backend's answer into file contents: picking a key out of a JSON secret and decoding the
//! value (`utf-8`, `base64`, `hex`). Shared by every backend. Errors name keys and paths, never values.

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::error::{MountError, MountResult, Reason};

/// How a value is written to its file. Names match without regard to case, and an empty one means
/// `utf-8`, as the official Vault provider reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// As it is.
    #[default]
    Utf8,
    /// Base64-decoded (standard alphabet, padding optional).
    Base64,
    /// Hex-decoded.
    Hex,
}

impl Encoding {
    /// Parses an `encoding` value.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "utf-8" | "utf8" => Ok(Self::Utf8),
            "base64" => Ok(Self::Base64),
            "hex" => Ok(Self::Hex),
            _ => {
                let shown: String = text.chars().take(32).collect();
                Err(format!(
                    "encoding {shown:?} is not one of utf-8, base64, hex"
                ))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Encoding {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// About how many bytes `text` takes once parsed into a [`serde_json::Value`]: its length plus 64 bytes
/// for every value in it (a value is 32 bytes, an object entry more). A body of small numbers or keys
/// takes ten or twenty times its size parsed, so a backend's answer is measured before it is parsed.
fn parsed_json_size(text: &[u8]) -> usize {
    let (mut values, mut in_string, mut escaped) = (1usize, false, false);
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b',' | b':' | b'[' | b'{' => values += 1,
                _ => {}
            }
        }
    }
    text.len().saturating_add(values.saturating_mul(64))
}

/// A backend's JSON answer, parsed, with the bytes it takes in memory as text and parsed value.
pub struct JsonAnswer {
    pub json: Value,
    pub bytes: usize,
}

/// Why a backend's answer was not parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum JsonAnswerError {
    /// It would take more than the bound once parsed (it was not parsed).
    TooLarge,
    NotJson,
}

/// Parses a backend's answer, measured first: one whose parsed value would take more than
/// `max_parsed` bytes ([`parsed_json_size`]) is refused before any of it is parsed.
pub fn parse_json_answer(text: &[u8], max_parsed: usize) -> Result<JsonAnswer, JsonAnswerError> {
    let parsed = parsed_json_size(text);
    if parsed > max_parsed {
        return Err(JsonAnswerError::TooLarge);
    }
    let json = serde_json::from_slice(text).map_err(|_| JsonAnswerError::NotJson)?;
    Ok(JsonAnswer {
        json,
        bytes: text.len().saturating_add(parsed),
    })
}

/// The bytes of `key` in a JSON object: strings as they are, any other JSON value serialised as JSON.
pub fn value_of_key(object: &Value, key: &str, what: &str) -> MountResult<Zeroizing<Vec<u8>>> {
    let Some(value) = object.as_object().and_then(|map| map.get(key)) else {
        return Err(MountError::not_found(
            Reason::SecretKeyNotFound,
            format!("{what} has no key {key:?}"),
        ));
    };
    Ok(Zeroizing::new(match value {
        Value::String(text) => text.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }))
}

/// The bytes at a dotted `path` of a parsed payload (`a.b.c`; a key of the top-level object that is
/// exactly `path`, dots and all, wins; a part that is a number indexes a list): strings as they are,
/// any other value as compact JSON.
pub fn value_at_path(root: &Value, path: &str, what: &str) -> MountResult<Zeroizing<Vec<u8>>> {
    let not_found = || {
        MountError::not_found(
            Reason::ExtractKeyNotFound,
            format!("{what} has nothing at {path:?}"),
        )
    };
    let found = match root.as_object().and_then(|map| map.get(path)) {
        Some(exact) => exact,
        None => path
            .split('.')
            .try_fold(root, |value, part| match value {
                Value::Object(map) => map.get(part),
                Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            })
            .ok_or_else(not_found)?,
    };
    Ok(Zeroizing::new(match found {
        Value::String(text) => text.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }))
}

/// Parses a YAML payload into a JSON value, bounded like [`parse_json_answer`]: its parsed size is
/// estimated first (every `:`, `-`, `,`, `[`, `{` and line may start a value) and a payload that could
/// take more than `max_parsed` bytes is refused unparsed; aliases (`*name`) are refused, since each one
/// replays its anchor's whole value (a few bytes of YAML can expand without bound).
pub fn parse_yaml_answer(text: &[u8], max_parsed: usize) -> Result<JsonAnswer, JsonAnswerError> {
    let values = text
        .iter()
        .filter(|b| matches!(b, b':' | b'-' | b',' | b'[' | b'{' | b'\n'))
        .count()
        .saturating_add(1);
    let parsed = text.len().saturating_add(values.saturating_mul(64));
    if parsed > max_parsed {
        return Err(JsonAnswerError::TooLarge);
    }
    let text = std::str::from_utf8(text).map_err(|_| JsonAnswerError::NotJson)?;
    let mut limits = serde_saphyr::options::AliasLimits::default();
    limits.max_total_replayed_events = 0;
    limits.max_replay_stack_depth = 0;
    limits.max_alias_expansions_per_anchor = 0;
    let mut options = serde_saphyr::Options::default();
    options.alias_limits = limits;
    let json =
        serde_saphyr::from_str_with_options(text, options).map_err(|_| JsonAnswerError::NotJson)?;
    Ok(JsonAnswer {
        json,
        bytes: parsed,
    })
}

/// Decodes a value as its object's `encoding` says.
pub fn decode(
    encoding: Encoding,
    raw: Zeroizing<Vec<u8>>,
    what: &str,
) -> MountResult<Zeroizing<Vec<u8>>> {
    let invalid = |name: &str| {
        MountError::invalid(
            Reason::InvalidEncoding,
            format!("{what} is not valid {name} (encoding: {name})"),
        )
    };
    match encoding {
        Encoding::Utf8 => Ok(raw),
        Encoding::Base64 => {
            let trimmed: Vec<u8> = raw
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let trimmed = Zeroizing::new(trimmed);
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(
                    trimmed
                        .strip_suffix(b"==")
                        .or_else(|| trimmed.strip_suffix(b"="))
                        .unwrap_or(&trimmed),
                )
                .map(Zeroizing::new)
                .map_err(|_| invalid("base64"))
        }
        Encoding::Hex => decode_hex(raw.trim_ascii())
            .map(Zeroizing::new)
            .ok_or_else(|| invalid("hex")),
    }
}

fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            let high = (pair[0] as char).to_digit(16)?;
            let low = (pair[1] as char).to_digit(16)?;
            Some((high * 16 + low) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_payloads_are_bounded_and_aliases_refused() {
        let plain = parse_yaml_answer(b"server:\n  port: 8080\nmodels: [a, b]\n", 4096).unwrap();
        assert_eq!(plain.json["server"]["port"], 8080);
        // An alias replays its anchor: refused, however small the text.
        let bomb = b"a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b]\n";
        assert_eq!(
            parse_yaml_answer(bomb, 1 << 20).err(),
            Some(JsonAnswerError::NotJson)
        );
        let dense = "- 1\n".repeat(1000);
        assert_eq!(
            parse_yaml_answer(dense.as_bytes(), 10_000).err(),
            Some(JsonAnswerError::TooLarge)
        );
    }

    #[test]
    fn values_at_dotted_paths() {
        let root: Value = serde_json::json!({
            "a": {"b": {"c": "deep"}, "n": 5, "list": ["x", {"y": true}]},
            "a.b": "exact wins",
            "server_port": 8080
        });
        let at = |path: &str| {
            value_at_path(&root, path, "the payload")
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        assert_eq!(at("a.b.c").unwrap(), "deep");
        assert_eq!(at("a.b").unwrap(), "exact wins");
        assert_eq!(at("a.n").unwrap(), "5");
        assert_eq!(at("a.list.1").unwrap(), r#"{"y":true}"#);
        assert_eq!(at("server_port").unwrap(), "8080");
        let missing = at("a.nope").unwrap_err();
        assert_eq!(missing.reason, Reason::ExtractKeyNotFound);
        assert!(at("a.b.c.d").is_err());
        assert!(at("").is_err());
    }

    #[test]
    fn parsed_sizes_count_values_outside_strings() {
        assert_eq!(parsed_json_size(b"0"), 1 + 64);
        assert_eq!(parsed_json_size(b"[0,0,0]"), 7 + 4 * 64);
        // Separators inside strings (and escaped quotes) are text, not values.
        assert_eq!(parsed_json_size(br#"{"a":"x,y:[{\"z"}"#), 17 + 3 * 64);
        let dense = "[0,".repeat(1000);
        assert!(parsed_json_size(dense.as_bytes()) > 40 * dense.len());
        let dense = format!("[{}0]", "0,".repeat(1000));
        assert_eq!(
            parse_json_answer(dense.as_bytes(), 16 * dense.len()).err(),
            Some(JsonAnswerError::TooLarge)
        );
        assert!(parse_json_answer(dense.as_bytes(), 64 * dense.len()).is_ok());
        assert_eq!(
            parse_json_answer(b"<html>", 1 << 20).err(),
            Some(JsonAnswerError::NotJson)
        );
    }

    #[test]
    fn encoding_names_ignore_case_and_empty_is_utf8() {
        for (text, encoding) in [
            ("", Encoding::Utf8),
            ("UTF-8", Encoding::Utf8),
            ("utf8", Encoding::Utf8),
            ("Base64", Encoding::Base64),
            (" HEX ", Encoding::Hex),
        ] {
            assert_eq!(Encoding::parse(text), Ok(encoding), "{text}");
        }
        assert!(Encoding::parse("rot13").unwrap_err().contains("rot13"));
    }

    #[test]
    fn keys_and_encodings() {
        let data = serde_json::json!({"s": "text", "n": 42, "o": {"a": [1]}, "b64": "aGk=", "hex": "6869"});
        assert_eq!(value_of_key(&data, "s", "x").unwrap().as_slice(), b"text");
        assert_eq!(value_of_key(&data, "n", "x").unwrap().as_slice(), b"42");
        assert_eq!(
            value_of_key(&data, "o", "x").unwrap().as_slice(),
            br#"{"a":[1]}"#
        );
        let missing = value_of_key(&data, "nope", "secret/data/app").unwrap_err();
        assert_eq!(missing.reason, Reason::SecretKeyNotFound);
        assert!(
            missing.message.contains("secret/data/app") && missing.message.contains("\"nope\"")
        );
        let b64 = value_of_key(&data, "b64", "x").unwrap();
        assert_eq!(
            decode(Encoding::Base64, b64, "x").unwrap().as_slice(),
            b"hi"
        );
        let hex = value_of_key(&data, "hex", "x").unwrap();
        assert_eq!(decode(Encoding::Hex, hex, "x").unwrap().as_slice(), b"hi");
        let bad = decode(
            Encoding::Hex,
            Zeroizing::new(b"zz-secret".to_vec()),
            "key k",
        )
        .unwrap_err();
        assert!(!bad.message.contains("secret"));
        assert!(decode(Encoding::Base64, Zeroizing::new(b"%%%".to_vec()), "k").is_err());
    }
}
