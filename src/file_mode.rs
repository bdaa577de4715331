//! File modes as users write them in a SecretProviderClass (`filePermission`, `mode`).
//!
//! One documented meaning for every spelling: a number with a leading `0` or `0o` is octal (as Go's
//! yaml.v3 reads the official providers' `0440`), any other number is decimal. So `0440`, `"0440"`,
//! `0o440` and `288` all mean `r--r-----`. Values must be within `0..=0o777`.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Permission bits for one mounted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    /// Parses a mode written as text: `0440`, `0o440` (octal) or `288` (decimal).
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let shown: String = trimmed.chars().take(24).collect();
        let not_a_mode = || {
            format!(
                "{shown:?} is not a file mode: write octal with a leading 0 (\"0440\") or a decimal number (288)"
            )
        };
        let (digits, radix) = if let Some(rest) = trimmed
            .strip_prefix("0o")
            .or_else(|| trimmed.strip_prefix("0O"))
        {
            (rest, 8)
        } else if trimmed.len() > 1 && trimmed.starts_with('0') {
            (&trimmed[1..], 8)
        } else {
            (trimmed, 10)
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_a_mode());
        }
        let value = u32::from_str_radix(digits, radix).map_err(|_| not_a_mode())?;
        Self::from_number(u64::from(value))
    }

    /// The mode a file gets: the object's own, or the driver's default when the object sets none or 0
    /// (the official providers read `filePermission: 0` as "not set").
    pub fn or_default(mode: Option<FileMode>, default: u32) -> u32 {
        mode.map(|m| m.0).filter(|m| *m != 0).unwrap_or(default)
    }

    /// A mode given as a plain number (decimal).
    pub fn from_number(value: u64) -> Result<Self, String> {
        if value > 0o777 {
            return Err(format!("{value} is over 0777 (511)"));
        }
        Ok(Self(value as u32))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Asking for a string gets a YAML plain scalar's own text, so `0440` keeps its leading zero.
        deserializer.deserialize_str(FileModeVisitor)
    }
}

struct FileModeVisitor;

impl Visitor<'_> for FileModeVisitor {
    type Value = FileMode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a file mode such as 0440, \"0440\", 0o440 or 288")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<FileMode, E> {
        FileMode::parse(text).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<FileMode, E> {
        FileMode::from_number(value).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<FileMode, E> {
        let value =
            u64::try_from(value).map_err(|_| E::custom("a file mode cannot be negative"))?;
        self.visit_u64(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Entry {
        mode: FileMode,
    }

    fn from_yaml(text: &str) -> Result<u32, String> {
        serde_saphyr::from_str::<Entry>(text)
            .map(|e| e.mode.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_documented_spelling_has_one_meaning() {
        for text in [
            "mode: 0440",
            "mode: \"0440\"",
            "mode: 0o440",
            "mode: 288",
            "mode: '288'",
        ] {
            assert_eq!(from_yaml(text), Ok(0o440), "{text}");
        }
        assert_eq!(from_yaml("mode: 420"), Ok(0o644));
        assert_eq!(from_yaml("mode: 0"), Ok(0));
        assert_eq!(from_yaml("mode: 0777"), Ok(0o777));
        assert_eq!(FileMode::or_default(Some(FileMode(0)), 0o644), 0o644);
        assert_eq!(FileMode::or_default(None, 0o644), 0o644);
        assert_eq!(FileMode::or_default(Some(FileMode(0o400)), 0o644), 0o400);
    }

    #[test]
    fn rejects_what_is_not_a_mode() {
        for text in [
            "mode: 0800",
            "mode: 1000",
            "mode: -1",
            "mode: rw-r--r--",
            "mode: 0x1ff",
            "mode: 4.2",
            "mode: \"\"",
            "mode: [1]",
        ] {
            assert!(from_yaml(text).is_err(), "{text}");
        }
    }
}
