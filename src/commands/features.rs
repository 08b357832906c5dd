//! `features [--backend NAME]`: what the backend a container would get supports, as
//! the runtime-spec document engines read (the config's default backend unless
//! named). A delegate's own answer is handed on when it has one; nexcage adds its
//! annotations to every backend's.

use std::path::Path;
use std::process::{Command, Stdio};

use oci_spec::runtime::Features;
use serde::Serialize;

use crate::backend::{Exit, features as docs};
use crate::cli::{FeaturesArgs, GlobalOpts};
use crate::config::{self, BackendConfig};
use crate::error::{Error, Result};

pub fn features(global: &GlobalOpts, a: &FeaturesArgs) -> Result<Exit> {
    let loaded = config::load(global.config.as_deref())?;
    let name = a.backend.as_deref().unwrap_or(&loaded.config.default);
    let backend = loaded.config.backends.get(name).ok_or_else(|| {
        Error::Usage(format!(
            "features: no backend {name:?} in {} (there are: {})",
            loaded.source,
            loaded
                .config
                .backends
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let mut doc = match backend {
        BackendConfig::Oci { path, .. } => delegate(path)?,
        BackendConfig::Lxc(_) | BackendConfig::Pct(_) => docs::supervised(),
        BackendConfig::Qm(_) => docs::vm(),
    };
    docs::add_nexcage(&mut doc);
    // Through oci-spec's type, so the document is checked against the spec's schema.
    let features: Features = serde_json::from_value(doc)
        .map_err(|e| Error::Usage(format!("features of backend {name:?}: {e}")))?;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    features
        .serialize(&mut ser)
        .map_err(|e| Error::Usage(e.to_string()))?;
    println!("{}", String::from_utf8_lossy(&out));
    Ok(0)
}

/// The delegate's own `features`, or what crun and runc both accept if it has none
/// (crun before 1.9 answers "unknown command").
fn delegate(path: &Path) -> Result<serde_json::Value> {
    let out = Command::new(path)
        .arg("features")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("run {} features", path.display()), e))?;
    if !out.status.success() {
        return Ok(docs::delegate_fallback());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::Usage(format!(
            "{} features: not a features document: {e}",
            path.display()
        ))
    })
}
