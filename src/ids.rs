//! Container ids are directory names under the root: same rules as runc.

use crate::error::{Error, Result};

/// runc's charset `[A-Za-z0-9_+.-]+`, never `.` or `..`; also bounded so that
/// paths under the root stay a directory name (NAME_MAX), and never starting with
/// `-`, which the tools an id is handed to (crun, runc, lxc-*, pct) would read as an
/// option.
pub fn validate(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id != "."
        && id != ".."
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

/// The names of the directories in `dir` that are valid container ids (a backend's
/// per-container directories; its own files, such as pct's empty archive, are not).
pub fn dirs_in(dir: &std::path::Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| validate(name).is_ok())
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    #[test]
    fn runc_rules() {
        for good in ["a", "abc-1.2_3+x", &"f".repeat(64)] {
            assert!(super::validate(good).is_ok(), "{good}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "a b", "ä", "a\0", "-x", "--help",
        ] {
            assert!(super::validate(bad).is_err(), "{bad:?}");
        }
    }
}
