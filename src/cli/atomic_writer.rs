//! Writes mount files with the driver's atomic layout (kubelet's AtomicWriter): the data goes into a new
//! hidden directory `..YYYY_MM_DD_HH_MM_SS.<random>`, `..data` is swapped to it by an atomic rename, and
//! each top-level name is a relative symlink into `..data`. Files get exactly their mode. When every file's
//! contents equal what is already there and no path disappeared, nothing is written at all.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::proto;

const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Contents were identical: nothing was touched.
    Unchanged,
    /// A new data directory was written and `..data` now points at it.
    Written { data_dir: String },
}

/// Writes `files` (already validated paths) into `target`.
pub fn write(target: &Path, files: &[proto::File]) -> io::Result<WriteOutcome> {
    fs::create_dir_all(target)?;
    let old_dir = fs::read_link(target.join(DATA_LINK)).ok();
    if old_dir.is_some() && unchanged(target, files)? {
        return Ok(WriteOutcome::Unchanged);
    }
    let new_tops: BTreeSet<&str> = files
        .iter()
        .filter_map(|f| f.path.split('/').next())
        .collect();
    remove_colliding_non_links(target, &new_tops)?;
    let data_dir = new_data_dir_name()?;
    write_data_dir(&target.join(&data_dir), files)?;
    let tmp_link = target.join(DATA_LINK_TMP);
    let _ = fs::remove_file(&tmp_link);
    symlink(&data_dir, &tmp_link)?;
    fs::rename(&tmp_link, target.join(DATA_LINK))?;
    link_top_level(target, &new_tops)?;
    if let Some(old) = old_dir {
        remove_old(target, &old, &new_tops)?;
    }
    Ok(WriteOutcome::Written { data_dir })
}

/// True when `..data` holds exactly these paths with exactly these contents.
fn unchanged(target: &Path, files: &[proto::File]) -> io::Result<bool> {
    let data = target.join(DATA_LINK);
    let mut existing = BTreeSet::new();
    list_files(&data, Path::new(""), &mut existing)?;
    let wanted: BTreeSet<PathBuf> = files.iter().map(|f| PathBuf::from(&f.path)).collect();
    if existing != wanted {
        return Ok(false);
    }
    for file in files {
        match fs::read(data.join(&file.path)) {
            Ok(current) if current == file.contents => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

fn list_files(dir: &Path, relative: &Path, out: &mut BTreeSet<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            list_files(&entry.path(), &path, out)?;
        } else {
            out.insert(path);
        }
    }
    Ok(())
}

/// Files a provider once wrote itself (not symlinks) are removed where a returned path needs the name.
fn remove_colliding_non_links(target: &Path, tops: &BTreeSet<&str>) -> io::Result<()> {
    for top in tops {
        let path = target.join(top);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => fs::remove_dir_all(&path)?,
            Ok(m) if !m.file_type().is_symlink() => fs::remove_file(&path)?,
            _ => {}
        }
    }
    Ok(())
}

fn write_data_dir(dir: &Path, files: &[proto::File]) -> io::Result<()> {
    fs::create_dir(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for file in files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, &file.contents)?;
        // Exactly the mode asked for, whatever the umask.
        fs::set_permissions(&path, fs::Permissions::from_mode(file.mode as u32 & 0o777))?;
    }
    Ok(())
}

fn link_top_level(target: &Path, tops: &BTreeSet<&str>) -> io::Result<()> {
    for top in tops {
        let link = target.join(top);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(top), &link)?;
        }
    }
    Ok(())
}

/// Removes the previous data directory and top-level links no longer returned.
fn remove_old(target: &Path, old_dir: &Path, tops: &BTreeSet<&str>) -> io::Result<()> {
    for entry in fs::read_dir(target)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("..") || tops.contains(name.as_ref()) {
            continue;
        }
        if entry.file_type()?.is_symlink() {
            fs::remove_file(entry.path())?;
        }
    }
    let old = target.join(old_dir);
    if old.starts_with(target)
        && old
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".."))
    {
        let _ = fs::remove_dir_all(old);
    }
    Ok(())
}

fn new_data_dir_name() -> io::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(format!(
        "..{}.{}",
        utc_timestamp(now.as_secs()),
        u32::from_le_bytes(random)
    ))
}

/// `YYYY_MM_DD_HH_MM_SS` in UTC for seconds since the epoch (the driver's data directory names).
pub fn utc_timestamp(secs: u64) -> String {
    let (year, month, day, hour, minute, second) = utc_fields(secs);
    format!("{year:04}_{month:02}_{day:02}_{hour:02}_{minute:02}_{second:02}")
}

/// RFC 3339 in UTC for seconds since the epoch (token expiration timestamps).
pub fn rfc3339(secs: u64) -> String {
    let (year, month, day, hour, minute, second) = utc_fields(secs);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

fn utc_fields(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, mode: i32, contents: &str) -> proto::File {
        proto::File {
            path: path.into(),
            mode,
            contents: contents.as_bytes().to_vec(),
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(0), "1970_01_01_00_00_00");
        assert_eq!(utc_timestamp(951_782_400), "2000_02_29_00_00_00");
        assert_eq!(utc_timestamp(1_798_761_599), "2026_12_31_23_59_59");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn driver_layout_modes_noop_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path();
        fs::write(target.join("a"), "provider-written").unwrap();
        let files = vec![file("a", 0o400, "one"), file("dir/b", 0o666, "two")];
        let WriteOutcome::Written { data_dir } = write(target, &files).unwrap() else {
            panic!("first write must write")
        };
        assert!(data_dir.starts_with("..") && data_dir.len() > 22);
        assert_eq!(
            fs::read_link(target.join("..data")).unwrap(),
            Path::new(&data_dir)
        );
        assert_eq!(
            fs::read_link(target.join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(
            fs::read_link(target.join("dir")).unwrap(),
            Path::new("..data/dir")
        );
        assert_eq!(fs::read_to_string(target.join("dir/b")).unwrap(), "two");
        assert_eq!(mode_of(&target.join("a")), 0o400);
        assert_eq!(mode_of(&target.join("dir/b")), 0o666);

        // Same contents, other mode: the driver writes nothing.
        let same = vec![file("a", 0o644, "one"), file("dir/b", 0o666, "two")];
        assert_eq!(write(target, &same).unwrap(), WriteOutcome::Unchanged);
        assert_eq!(mode_of(&target.join("a")), 0o400);

        // A changed value and a path that disappeared: new data dir, old one and old link gone.
        let rotated = vec![file("a", 0o400, "uno")];
        let WriteOutcome::Written { data_dir: second } = write(target, &rotated).unwrap() else {
            panic!("a change must write")
        };
        assert_ne!(second, data_dir);
        assert!(!target.join(&data_dir).exists());
        assert!(fs::symlink_metadata(target.join("dir")).is_err());
        assert_eq!(fs::read_to_string(target.join("a")).unwrap(), "uno");
    }
}
