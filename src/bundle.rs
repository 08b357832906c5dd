//! The caller's OCI bundle: its absolute path and parsed `config.json`, whole
//! (`Bundle::load`, for the backends that translate it) or in outline
//! (`Bundle::outline`, for what `create` decides before a backend is chosen).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespace, Root, Spec};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub struct Bundle<S = Spec> {
    /// Absolute, not canonicalised (runc keeps the caller's symlinks too).
    pub path: PathBuf,
    pub spec: S,
}

/// What `create` reads of config.json for every backend: routing (annotations), the
/// record (rootfs, the process's environment) and the checks every backend makes
/// (`spec_check::check`). crun and runc are handed the bundle and read it whole
/// themselves, the supervised backends load it whole (`Bundle::load`); parsing only
/// this keeps the hand-off to a delegate from running, and paging in, the
/// deserializer of every type of the OCI spec. Types as in `oci_spec`'s `Spec`, so
/// what is read is read alike (unknown fields are ignored by both).
#[derive(Debug, Default, Deserialize)]
pub struct Outline {
    #[serde(default)]
    pub root: Option<Root>,
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
    #[serde(default)]
    pub process: Option<ProcessOutline>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub linux: Option<LinuxOutline>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ProcessOutline {
    #[serde(default)]
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Required, as in `oci_spec`'s `Process`.
    pub cwd: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
pub struct LinuxOutline {
    #[serde(default)]
    pub namespaces: Option<Vec<LinuxNamespace>>,
}

/// The parts of a parsed spec the bundle's own methods use.
pub trait SpecParts {
    fn root(&self) -> Option<&Root>;
    fn annotations(&self) -> Option<&HashMap<String, String>>;
}

impl SpecParts for Spec {
    fn root(&self) -> Option<&Root> {
        Spec::root(self).as_ref()
    }
    fn annotations(&self) -> Option<&HashMap<String, String>> {
        Spec::annotations(self).as_ref()
    }
}

impl SpecParts for Outline {
    fn root(&self) -> Option<&Root> {
        self.root.as_ref()
    }
    fn annotations(&self) -> Option<&HashMap<String, String>> {
        self.annotations.as_ref()
    }
}

impl Bundle {
    /// The bundle with its whole spec.
    pub fn load(path: &Path) -> Result<Bundle> {
        Self::read(path)
    }
}

impl Bundle<Outline> {
    /// The bundle with the outline of its spec `create` needs.
    pub fn outline(path: &Path) -> Result<Bundle<Outline>> {
        Bundle::read(path)
    }
}

impl<S: SpecParts + DeserializeOwned> Bundle<S> {
    fn read(path: &Path) -> Result<Bundle<S>> {
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
        let spec: S = serde_json::from_slice(&text)
            .map_err(|e| err(format!("config.json is not a valid OCI spec: {e}")))?;
        Ok(Bundle { path, spec })
    }

    /// `root.path` resolved against the bundle; required by the spec on Linux.
    pub fn rootfs(&self) -> Result<PathBuf> {
        let root = self.spec.root().ok_or_else(|| Error::Bundle {
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
        self.spec.annotations().cloned().unwrap_or_default()
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

    #[test]
    fn outline_reads_as_the_whole_spec_does() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundles/busybox");
        let mut whole = Bundle::load(&dir).unwrap();
        whole
            .spec
            .set_annotations(Some(HashMap::from([("k".into(), "v".into())])));
        let tmp = tempfile::tempdir().unwrap();
        whole.spec.save(tmp.path().join("config.json")).unwrap();
        let whole = Bundle::load(tmp.path()).unwrap();
        let outline = Bundle::outline(tmp.path()).unwrap();
        let (spec, o) = (&whole.spec, &outline.spec);
        assert_eq!(spec.root().as_ref(), o.root.as_ref());
        assert_eq!(spec.annotations(), &o.annotations);
        assert_eq!(spec.hostname(), &o.hostname);
        let (p, op) = (
            spec.process().as_ref().unwrap(),
            o.process.as_ref().unwrap(),
        );
        assert_eq!((p.args(), p.env(), p.cwd()), (&op.args, &op.env, &op.cwd));
        let namespaces = spec.linux().as_ref().unwrap().namespaces();
        assert_eq!(namespaces, &o.linux.as_ref().unwrap().namespaces);
        assert!(namespaces.as_ref().is_some_and(|n| !n.is_empty()));
        // Required where the whole spec requires it.
        std::fs::write(
            tmp.path().join("config.json"),
            r#"{"process": {"args": ["true"]}}"#,
        )
        .unwrap();
        assert!(Bundle::outline(tmp.path()).is_err());
        assert!(Bundle::load(tmp.path()).is_err());
    }
}
