//! The one interface every backend implements. The core (commands) owns ids, records,
//! routing and output formats; a backend only makes and drives containers.

pub mod cgroup_keys;
pub mod crun_state;
pub mod device_nodes;
pub mod features;
pub mod genconf;
pub mod id_maps;
pub mod in_root;
pub mod lxc;
pub mod mount_entry;
pub mod oci;
pub mod pct;
pub mod proxmox;
pub mod qm;

use std::collections::HashMap;
use std::ffi::OsString;

use serde::{Deserialize, Serialize};

use crate::cli::{Command, GlobalOpts};
use crate::config::BackendConfig;
use crate::error::Result;
use crate::state::{Record, Root};

/// One call of nexcage, as a backend needs to see it.
pub struct Invocation<'a> {
    pub global: &'a GlobalOpts,
    pub command: &'a Command,
    /// The subcommand's flags in canonical form (see `cli::passthrough`), minus the
    /// ones the core rewrites (`--bundle`).
    pub flags: Vec<OsString>,
}

/// runc's statuses: the spec's four plus `paused`, which oci-spec's enum lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(text)
    }
}

/// What a backend reports about a live container.
#[derive(Debug, Clone)]
pub struct Observed {
    pub pid: i32,
    pub status: Status,
}

/// Exit code to hand back to our caller.
pub type Exit = i32;

pub trait Backend {
    fn name(&self) -> &str;

    /// Fails with `Error::Unsupported` if the backend cannot carry out this invocation
    /// at all; checked before anything is created.
    fn check(&self, inv: &Invocation) -> Result<()>;

    /// `create`, `run` or `restore` (from `inv.command`) of a claimed record. For a
    /// foreground `run`, returns when the container has exited.
    fn create(&self, inv: &Invocation, record: &Record) -> Result<Exit>;
    fn start(&self, inv: &Invocation, record: &Record) -> Result<Exit>;
    /// Whether the backend still has anything for this container (cheap; no delegate run).
    fn holds(&self, record: &Record) -> bool;
    /// Containers the backend knows, by id; absent ones are gone from the backend.
    fn observe(&self, inv: &Invocation, records: &[&Record]) -> Result<HashMap<String, Observed>>;
    fn kill(&self, inv: &Invocation, record: &Record, signal: i32, all: bool) -> Result<Exit>;
    fn delete(&self, inv: &Invocation, record: &Record, force: bool) -> Result<Exit>;
    /// Quietly removes whatever the backend holds for a container (failed create,
    /// finished `run`, `gc` of an id no record owns); succeeds if there is nothing.
    fn remove(&self, inv: &Invocation, id: &str) -> Result<()>;
    /// `gc`: the ids the backend holds something for, whether a record owns them or not.
    fn held(&self) -> Vec<String>;
    /// `gc`: destroys what the backend made and holds no id for any more (Proxmox
    /// containers of a wiped state); one line on each, failures logged.
    fn collect_strays(&self) -> Vec<String>;
    /// `exec`, `ps`, `pause`, `resume`, `events`, `update`, `checkpoint` (from
    /// `inv.command`) on an existing container.
    fn operate(&self, inv: &Invocation, record: &Record) -> Result<Exit>;
}

pub fn open(name: &str, config: &BackendConfig, root: &Root) -> Box<dyn Backend> {
    match config {
        BackendConfig::Oci { path, flavor } => Box::new(oci::Oci::new(
            name,
            path,
            flavor.unwrap_or_else(|| crate::config::OciFlavor::guess(path)),
            root.backend_root(name),
        )),
        BackendConfig::Pct(cfg) => Box::new(pct::Pct::new(name, cfg, root.backend_root(name))),
        BackendConfig::Qm(cfg) => Box::new(qm::Qm::new(name, cfg, root.backend_root(name))),
        BackendConfig::Lxc(cfg) => {
            let lxcpath = cfg
                .lxcpath
                .clone()
                .unwrap_or_else(|| root.path().join("lxc").join(name));
            Box::new(lxc::Lxc::new(name, cfg, root.backend_root(name), lxcpath))
        }
    }
}

pub fn for_record(record: &Record, root: &Root) -> Box<dyn Backend> {
    open(&record.backend, &record.backend_config, root)
}
