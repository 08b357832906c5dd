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
    /// the bundle's real directory, a directory, and no symlink in `root.path`, so
    /// that an image or a spec cannot make the host's `/` (or any other host tree)
    /// the container's root. Returns the real path.
    pub fn checked_rootfs(&self) -> Result<PathBuf> {
        let root = self.rootfs()?;
        let err = |reason: String| Error::Bundle {
            path: self.path.clone(),
            reason,
        };
        let base = std::fs::canonicalize(&self.path).map_err(|e| err(e.to_string()))?;
        let wanted = base.join(root.strip_prefix(&self.path).unwrap_or(&root));
        let wanted: PathBuf = wanted.components().collect();
        let real = std::fs::canonicalize(&wanted)
            .map_err(|e| err(format!("invalid rootfs: {}: {e}", wanted.display())))?;
        if real != wanted || wanted.components().any(|c| c.as_os_str() == "..") {
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
