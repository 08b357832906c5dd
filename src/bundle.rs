//! The caller's OCI bundle: its absolute path and parsed `config.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

pub struct Bundle {
    /// Absolute, not canonicalised (runc keeps the caller's symlinks too).
    pub path: PathBuf,
    pub spec: Spec,
}

impl Bundle {
    pub fn load(path: &Path) -> Result<Bundle> {
        let err = |reason: String| Error::Bundle {
            path: path.to_path_buf(),
            reason,
        };
        let path = std::path::absolute(path).map_err(|e| err(e.to_string()))?;
        let meta = std::fs::metadata(&path).map_err(|e| err(e.to_string()))?;
        if !meta.is_dir() {
            return Err(err("not a directory".into()));
        }
        // Read whole, then parse: serde_json is much slower on a reader (Spec::load).
        let text = std::fs::read(path.join("config.json"))
            .map_err(|e| err(format!("config.json: {e}")))?;
        let spec: Spec = serde_json::from_slice(&text)
            .map_err(|e| err(format!("config.json is not a valid OCI spec: {e}")))?;
        Ok(Bundle { path, spec })
    }

    /// `root.path` resolved against the bundle; required by the spec on Linux.
    pub fn rootfs(&self) -> Result<PathBuf> {
        let root = self.spec.root().as_ref().ok_or_else(|| Error::Bundle {
            path: self.path.clone(),
            reason: "config.json has no \"root\"".into(),
        })?;
        Ok(self.path.join(root.path()))
    }

    /// The rootfs as runc accepts it (libcontainer's `validate.rootfs`): relative to
    /// the bundle's real directory, cleaned, a directory, and no symlink in it, so
    /// that an image or a spec cannot make the host's `/` (or any other host tree)
    /// the container's root. Returns the real path.
    pub fn checked_rootfs(&self) -> Result<PathBuf> {
        let root = self.rootfs()?;
        let err = |reason: String| Error::Bundle {
            path: self.path.clone(),
            reason,
        };
        let base = std::fs::canonicalize(&self.path).map_err(|e| err(e.to_string()))?;
        // Cleaned as Go's filepath.Join cleans it: `..` taken away lexically.
        let mut wanted = PathBuf::new();
        for c in base
            .join(root.strip_prefix(&self.path).unwrap_or(&root))
            .components()
        {
            match c {
                std::path::Component::ParentDir => {
                    wanted.pop();
                }
                std::path::Component::CurDir => {}
                other => wanted.push(other),
            }
        }
        let real = std::fs::canonicalize(&wanted)
            .map_err(|e| err(format!("invalid rootfs: {}: {e}", wanted.display())))?;
        if real != wanted {
            return Err(err(format!(
                "invalid rootfs: {}: not an absolute path, or a symlink",
                wanted.display()
            )));
        }
        if !real.is_dir() {
            return Err(err(format!(
                "invalid rootfs: {}: not a directory",
                wanted.display()
            )));
        }
        Ok(real)
    }

    pub fn annotations(&self) -> HashMap<String, String> {
        self.spec.annotations().clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_at(dir: &Path, root: &str) -> Bundle {
        let mut spec = Spec::default();
        spec.set_root(Some(
            oci_spec::runtime::RootBuilder::default()
                .path(root)
                .build()
                .unwrap(),
        ));
        Bundle {
            path: dir.to_path_buf(),
            spec,
        }
    }

    #[test]
    fn rootfs_as_runc_takes_it() {
        let top = tempfile::tempdir().unwrap();
        let top = std::fs::canonicalize(top.path()).unwrap();
        std::fs::create_dir_all(top.join("b")).unwrap();
        std::fs::create_dir_all(top.join("rootfs")).unwrap();
        std::os::unix::fs::symlink("/", top.join("link")).unwrap();
        std::fs::write(top.join("file"), "").unwrap();
        let b = top.join("b");
        // `..` is cleaned away, as filepath.Join does.
        assert_eq!(
            bundle_at(&b, "../rootfs").checked_rootfs().unwrap(),
            top.join("rootfs")
        );
        for bad in ["../link", "../file", "../missing"] {
            assert!(bundle_at(&b, bad).checked_rootfs().is_err(), "{bad}");
        }
    }
}
