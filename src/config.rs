//! nexcage's own configuration: the named backends and the routing rules.
//!
//! Read from `--config`, else `$NEXCAGE_CONFIG`, else `/etc/nexcage/config.json`;
//! never from the working directory, where engines keep the bundle's `config.json`.
//! Without any file a built-in default routes everything to crun (or runc).
//! Unknown keys are rejected so a typo never silently changes where containers go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/nexcage/config.json";
pub const CONFIG_ENV: &str = "NEXCAGE_CONFIG";

/// Engines may call us with an empty environment, so binaries are looked up here
/// rather than in `$PATH`.
pub const SEARCH_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Backend used when no annotation or rule picks one.
    pub default: String,
    pub backends: BTreeMap<String, BackendConfig>,
    /// Backends that the `org.nexcage.backend` annotation may select.
    #[serde(default)]
    pub annotation_backends: Vec<String>,
    /// Ordered; the first matching rule wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    /// A runc-compatible runtime (crun, runc) to which the container is handed whole.
    Oci {
        /// Absolute path, or a bare name looked up in [`SEARCH_PATH`].
        path: PathBuf,
        /// Which dialect the binary speaks; guessed from its file name when absent.
        #[serde(default)]
        flavor: Option<OciFlavor>,
    },
    /// A Proxmox VE LXC container made and driven with `pct` (see backend::pct).
    Pct(PctConfig),
    /// A plain LXC container made and driven with the `lxc-*` tools (see backend::lxc).
    Lxc(LxcConfig),
    /// A Proxmox VE VM made and driven with `qm` (see backend::qm).
    Qm(QmConfig),
}

/// Settings of a `qm` backend.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QmConfig {
    #[serde(default = "default_qm")]
    pub qm: PathBuf,
    #[serde(default = "default_pvesh")]
    pub pvesh: PathBuf,
    /// The guest's RAM in MiB when the spec sets no memory limit.
    #[serde(default = "default_vm_memory")]
    pub memory: u64,
    /// The guest's cores when the spec sets no cpu limit.
    #[serde(default = "default_vm_cores")]
    pub cores: u64,
    /// Hardware virtualisation (`kvm: 1`); off: TCG, slow but anywhere.
    #[serde(default = "default_true")]
    pub kvm: bool,
    /// The guest kernel: a directory with `vmlinuz` and `modules/` (a kernel's
    /// lib/modules/<version>, depmod'ed); PVE ships none.
    pub kernel: PathBuf,
    /// Shares the rootfs into the VM in place (PVE ships /usr/libexec/virtiofsd).
    #[serde(default = "default_virtiofsd")]
    pub virtiofsd: PathBuf,
    /// Settings a container may override with an `org.nexcage.qm.<key>` annotation
    /// (as pct's).
    #[serde(default)]
    pub allowed_annotations: Vec<String>,
    /// The Proxmox bridge of the NIC (`net0`) of a container without a network
    /// namespace of its own; none: such containers are refused.
    #[serde(default)]
    pub bridge: Option<String>,
}

fn default_qm() -> PathBuf {
    PathBuf::from("qm")
}
fn default_vm_memory() -> u64 {
    512
}
fn default_vm_cores() -> u64 {
    1
}
fn default_true() -> bool {
    true
}
fn default_virtiofsd() -> PathBuf {
    PathBuf::from("/usr/libexec/virtiofsd")
}

/// Settings of an `lxc` backend.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LxcConfig {
    /// LXC's lxcpath (`lxc-* -P`), where the container definitions go; by default
    /// `<root>/lxc/<backend name>`, beside nexcage's own state.
    #[serde(default)]
    pub lxcpath: Option<PathBuf>,
    /// Run containers whose spec asks for no user namespace in one anyway, with
    /// container ids 0..`id_count` mapped to host ids from `id_base`; the rootfs and
    /// bind mounts are id-mapped mounts, so the bundle stays as it is.
    #[serde(default)]
    pub unprivileged: bool,
    #[serde(default = "default_id_base")]
    pub id_base: u32,
    #[serde(default = "default_id_count")]
    pub id_count: u32,
}

fn default_id_base() -> u32 {
    100_000
}
fn default_id_count() -> u32 {
    65_536
}

/// Settings of a `pct` backend; every key has Proxmox's usual default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PctConfig {
    #[serde(default = "default_pct")]
    pub pct: PathBuf,
    #[serde(default = "default_pvesh")]
    pub pvesh: PathBuf,
    /// Unprivileged containers map root to 100000+ (Proxmox's default for `pct create`).
    #[serde(default)]
    pub unprivileged: bool,
    /// Proxmox's `--net0` value, e.g. `name=eth0,bridge=vmbr0,ip=dhcp`; none: no network.
    #[serde(default)]
    pub net0: Option<String>,
    /// Where the CT configs are (`/etc/pve/lxc`, the node's in pmxcfs), and PVE's
    /// per-CT config locks: raw `lxc.*` lines (the spec's file and tmpfs mounts) can
    /// only be added by editing the config, under its lock.
    #[serde(default = "default_config_dir")]
    pub config_dir: PathBuf,
    #[serde(default = "default_lock_dir")]
    pub lock_dir: PathBuf,
    /// Settings a container may override with an `org.nexcage.pct.<key>` annotation;
    /// any of [`PctConfig::OVERRIDABLE`]. Empty: none.
    #[serde(default)]
    pub allowed_annotations: Vec<String>,
}

impl PctConfig {
    pub const OVERRIDABLE: &[&str] = OVERRIDABLE_ON_PROXMOX;
}

/// What a container may set by annotation on a Proxmox backend, if its
/// `allowed_annotations` says so.
pub const OVERRIDABLE_ON_PROXMOX: &[&str] = &["vmid"];

fn check_overridable(name: &str, allowed: &[String]) -> std::result::Result<(), String> {
    match allowed
        .iter()
        .find(|k| !OVERRIDABLE_ON_PROXMOX.contains(&k.as_str()))
    {
        Some(key) => Err(format!(
            "backend {name:?}: {key:?} cannot be overridden (possible: {})",
            OVERRIDABLE_ON_PROXMOX.join(", ")
        )),
        None => Ok(()),
    }
}

fn default_config_dir() -> PathBuf {
    PathBuf::from("/etc/pve/lxc")
}
fn default_lock_dir() -> PathBuf {
    PathBuf::from("/run/lock/lxc")
}
fn default_pct() -> PathBuf {
    PathBuf::from("pct")
}
fn default_pvesh() -> PathBuf {
    PathBuf::from("pvesh")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OciFlavor {
    Crun,
    Runc,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub backend: String,
    /// Glob over the container id.
    #[serde(default)]
    pub id: Option<String>,
    /// Annotation key -> glob over its value; all must match.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Where the configuration came from, for messages and `nexcage route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    BuiltIn,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::BuiltIn => f.write_str("built-in default"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub source: Source,
}

/// Finds and loads the configuration. `explicit` is the `--config` flag.
pub fn load(explicit: Option<&Path>) -> Result<Loaded> {
    load_with(explicit, true)
}

/// The configuration as written, its binaries not looked up (`check` looks at each
/// backend's itself, so that one missing binary is one failed check).
pub fn load_unresolved(explicit: Option<&Path>) -> Result<Loaded> {
    load_with(explicit, false)
}

fn load_with(explicit: Option<&Path>, resolved: bool) -> Result<Loaded> {
    let from_env = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty());
    let path = match (explicit, from_env) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, Some(p)) => Some(PathBuf::from(p)),
        (None, None) => {
            let p = Path::new(DEFAULT_CONFIG_PATH);
            p.exists().then(|| p.to_path_buf())
        }
    };
    match path {
        Some(path) => read_file(&path, resolved).map(|config| Loaded {
            config,
            source: Source::File(path),
        }),
        None => built_in().map(|config| Loaded {
            config,
            source: Source::BuiltIn,
        }),
    }
}

pub fn load_file(path: &Path) -> Result<Config> {
    read_file(path, true)
}

fn read_file(path: &Path, resolved: bool) -> Result<Config> {
    let err = |reason: String| Error::Config {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut config: Config = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    config.validate().map_err(err)?;
    if resolved {
        config.resolve_paths().map_err(err)?;
    }
    Ok(config)
}

/// crun if installed, else runc; both selectable by annotation.
pub fn built_in() -> Result<Config> {
    let mut backends = BTreeMap::new();
    for name in ["crun", "runc"] {
        if let Some(path) = find_binary(Path::new(name)) {
            backends.insert(name.to_string(), BackendConfig::Oci { path, flavor: None });
        }
    }
    let default = backends
        .keys()
        .next()
        .cloned()
        .ok_or_else(|| Error::Config {
            path: PathBuf::from(DEFAULT_CONFIG_PATH),
            reason: format!(
                "no config file and neither crun nor runc found in {}",
                SEARCH_PATH.join(":")
            ),
        })?;
    Ok(Config {
        default,
        annotation_backends: backends.keys().cloned().collect(),
        backends,
        rules: Vec::new(),
    })
}

/// Backend names become directory names under the root, so they use the id charset.
pub fn valid_backend_name(name: &str) -> bool {
    crate::ids::validate(name).is_ok()
}

impl Config {
    fn validate(&self) -> std::result::Result<(), String> {
        if self.backends.is_empty() {
            return Err("no backends defined".into());
        }
        for name in self.backends.keys() {
            if !valid_backend_name(name) {
                return Err(format!("invalid backend name {name:?}"));
            }
        }
        let known = |name: &str, what: &str| {
            if self.backends.contains_key(name) {
                Ok(())
            } else {
                Err(format!(
                    "{what} names unknown backend {name:?} (defined: {})",
                    self.backend_names()
                ))
            }
        };
        known(&self.default, "\"default\"")?;
        for name in &self.annotation_backends {
            known(name, "\"annotation_backends\"")?;
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let what = format!("rule {}", i + 1);
            known(&rule.backend, &what)?;
            if rule.id.is_none() && rule.annotations.is_empty() {
                return Err(format!(
                    "{what} has neither \"id\" nor \"annotations\" to match"
                ));
            }
            for pattern in rule.id.iter().chain(rule.annotations.values()) {
                glob::Pattern::new(pattern)
                    .map_err(|e| format!("{what}: bad glob {pattern:?}: {e}"))?;
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self) -> std::result::Result<(), String> {
        for (name, backend) in self.backends.iter_mut() {
            match backend {
                BackendConfig::Oci { path, .. } => resolve(name, path)?,
                BackendConfig::Pct(pct) => {
                    resolve(name, &mut pct.pct)?;
                    resolve(name, &mut pct.pvesh)?;
                    check_overridable(name, &pct.allowed_annotations)?;
                }
                BackendConfig::Qm(qm) => {
                    resolve(name, &mut qm.qm)?;
                    resolve(name, &mut qm.pvesh)?;
                    check_overridable(name, &qm.allowed_annotations)?;
                    // It goes into a Proxmox property string and names an interface.
                    if let Some(bridge) = &qm.bridge
                        && (bridge.is_empty()
                            || bridge.len() > 15
                            || !bridge
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)))
                    {
                        return Err(format!(
                            "backend {name:?}: bridge {bridge:?} is not an interface name"
                        ));
                    }
                    for (what, path) in [("kernel", &qm.kernel), ("virtiofsd", &qm.virtiofsd)] {
                        if !path.is_absolute() {
                            return Err(format!("backend {name:?}: {what} must be absolute"));
                        }
                    }
                }
                BackendConfig::Lxc(lxc) => {
                    if lxc.lxcpath.as_ref().is_some_and(|p| !p.is_absolute()) {
                        return Err(format!("backend {name:?}: lxcpath must be absolute"));
                    }
                    if lxc.id_count == 0 || lxc.id_base.checked_add(lxc.id_count).is_none() {
                        return Err(format!("backend {name:?}: invalid id_base/id_count"));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn backend_names(&self) -> String {
        self.backends.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn resolve(backend: &str, path: &mut PathBuf) -> std::result::Result<(), String> {
    *path = find_binary(path)
        .ok_or_else(|| format!("backend {backend:?}: binary {} not found", path.display()))?;
    Ok(())
}

/// Resolves a bare name through [`SEARCH_PATH`]; checks that a path is an executable file.
pub fn find_binary(name: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exe = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.components().count() > 1 || name.is_absolute() {
        return is_exe(name).then(|| name.to_path_buf());
    }
    SEARCH_PATH
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| is_exe(p))
}

impl OciFlavor {
    /// runc-compatible runtimes other than crun take runc's flags.
    pub fn guess(path: &Path) -> Self {
        match path.file_name().and_then(|n| n.to_str()) {
            Some(n) if n.contains("crun") => OciFlavor::Crun,
            _ => OciFlavor::Runc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<Config, String> {
        let c: Config = serde_json::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn rejects_unknown_keys_and_backends() {
        let ok = r#"{"default":"a","backends":{"a":{"type":"oci","path":"/bin/true"}}}"#;
        assert!(parse(ok).is_ok());
        let typo = r#"{"default":"a","backend":{},"backends":{"a":{"type":"oci","path":"x"}}}"#;
        assert!(parse(typo).unwrap_err().contains("unknown field"));
        let unknown = r#"{"default":"b","backends":{"a":{"type":"oci","path":"x"}}}"#;
        assert!(
            parse(unknown)
                .unwrap_err()
                .contains("unknown backend \"b\"")
        );
        let rule = r#"{"default":"a","backends":{"a":{"type":"oci","path":"x"}},
                      "rules":[{"backend":"a"}]}"#;
        assert!(parse(rule).unwrap_err().contains("neither"));
        let kind = r#"{"default":"a","backends":{"a":{"type":"vm","path":"x"}}}"#;
        assert!(parse(kind).unwrap_err().contains("unknown variant"));
    }

    /// What the Debian package installs as /etc/nexcage/config.json, and its examples.
    #[test]
    fn packaged_configs_are_valid() {
        for (name, text) in [
            ("config.json", include_str!("../hack/package/config.json")),
            (
                "lxc.json",
                include_str!("../hack/package/examples/lxc.json"),
            ),
            (
                "pve.json",
                include_str!("../hack/package/examples/pve.json"),
            ),
        ] {
            if let Err(e) = parse(text) {
                panic!("hack/package: {name}: {e}");
            }
        }
    }

    #[test]
    fn flavor_from_name() {
        assert_eq!(
            OciFlavor::guess(Path::new("/usr/bin/crun")),
            OciFlavor::Crun
        );
        assert_eq!(
            OciFlavor::guess(Path::new("/usr/sbin/runc")),
            OciFlavor::Runc
        );
    }
}
