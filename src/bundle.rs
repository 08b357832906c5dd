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

    pub fn annotations(&self) -> HashMap<String, String> {
        self.spec.annotations().clone().unwrap_or_default()
    }
}
