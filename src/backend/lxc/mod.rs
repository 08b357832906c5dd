//! Backend `lxc`: the bundle runs as a plain LXC container, defined in place (the
//! rootfs is not copied) and driven with the `lxc-*` tools, on any Linux host. The
//! engine gets a reapable pid, the container's stdio and its exit status through the
//! holder + init mechanism of `crate::supervise`, exactly as with `pct`; only how
//! the container is defined and started differs.

pub mod translate;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{Backend, Exit, Invocation, Observed, Status};
use crate::bundle::Bundle;
use crate::cli;
use crate::config::{self, LxcConfig};
use crate::error::{Error, IoContext, Result};
use crate::state::Record;
use crate::supervise::host::{self, Supervisor};

/// Notes in the runtime directory, for the commands that come after `create`.
const MOUNT_POINT_NOTE: &str = "mount_point";
const CGROUP_NOTE: &str = "cgroup";
/// Written before the LXC definition is made: only then is `<lxcpath>/<id>` ours to
/// remove (a create that finds someone else's must leave it alone).
const DEFINED_NOTE: &str = "defined";
/// How long `delete` waits for LXC to report a killed container stopped.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long init may take to follow the workload out before LXC is asked.
const INIT_EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

pub struct Lxc {
    name: String,
    cfg: LxcConfig,
    sup: Supervisor,
    /// LXC's lxcpath: `<lxcpath>/<id>/config` defines the container.
    lxcpath: PathBuf,
}

impl Lxc {
    pub fn new(name: &str, cfg: &LxcConfig, base: PathBuf, lxcpath: PathBuf) -> Lxc {
        Lxc {
            name: name.to_string(),
            cfg: cfg.clone(),
            sup: Supervisor {
                backend: name.to_string(),
                base,
            },
            lxcpath,
        }
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::Unsupported {
            command: what.to_string(),
            backend: self.name.clone(),
        }
    }

    fn tool(&self, name: &str) -> Result<PathBuf> {
        config::find_binary(Path::new(name)).ok_or_else(|| Error::Backend {
            backend: self.name.clone(),
            reason: format!("{name} not found (install LXC: apt-get install lxc)"),
        })
    }

    /// `lxc-TOOL -n ID -P LXCPATH ARGS...`
    fn command(&self, tool: &str, id: &str) -> Result<Command> {
        let mut cmd = Command::new(self.tool(tool)?);
        cmd.arg("-n").arg(id).arg("-P").arg(&self.lxcpath);
        Ok(cmd)
    }

    fn run(&self, tool: &str, id: &str, args: &[&str]) -> Result<Output> {
        self.command(tool, id)?
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context(|| format!("run {tool}"))
    }

    fn failed(&self, what: &str, out: &Output) -> Error {
        let text = String::from_utf8_lossy(&out.stderr);
        Error::Backend {
            backend: self.name.clone(),
            reason: format!("{what} failed: {}", text.trim().replace('\n', " / ")),
        }
    }

    fn ct_dir(&self, id: &str) -> PathBuf {
        self.lxcpath.join(id)
    }

    fn note(&self, id: &str, name: &str) -> Option<String> {
        fs::read_to_string(self.sup.dir(id).join(name)).ok()
    }

    /// LXC's state: STOPPED, STARTING, RUNNING, STOPPING, ABORTING, FREEZING, FROZEN...
    fn lxc_state(&self, id: &str) -> Result<String> {
        let out = self.run("lxc-info", id, &["-s", "-H"])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Defines the container: `<lxcpath>/<id>/config`, made exclusively so that a
    /// container of the same name is never taken over.
    fn define(&self, id: &str, config: &str) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.lxcpath)
            .context(|| format!("create {}", self.lxcpath.display()))?;
        let dir = self.ct_dir(id);
        let note = self.sup.dir(id).join(DEFINED_NOTE);
        fs::write(&note, "").context(|| "note the LXC definition")?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                let _ = fs::remove_file(&note);
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Backend {
                        backend: self.name.clone(),
                        reason: format!(
                            "an LXC container {id:?} is already defined in {}",
                            self.lxcpath.display()
                        ),
                    }
                } else {
                    Error::io(format!("create {}", dir.display()), e)
                }
            })?;
        fs::write(dir.join("config"), config).context(|| "write the LXC config")
    }

    /// Stops the LXC container if it runs (or is still starting), and waits until
    /// LXC reports it stopped, its cgroups gone.
    fn stop_ct(&self, id: &str) -> Result<()> {
        let deadline = std::time::Instant::now() + STOP_WAIT;
        let grace = std::time::Instant::now() + INIT_EXIT_GRACE;
        loop {
            // init gone: LXC's monitor ends once it has cleaned up; watching for that
            // is much cheaper than asking lxc-info (which asks the busy monitor).
            if self.sup.init_pid(id).is_none() && self.sup.manager_pid(id).is_some() {
                std::thread::sleep(std::time::Duration::from_micros(500));
                continue;
            }
            // The workload (the holder become it) has ended: init follows by itself.
            if self.sup.init_pid(id).is_some()
                && self.sup.started(id)
                && self.sup.holder(id).is_none()
                && std::time::Instant::now() < grace
            {
                std::thread::sleep(std::time::Duration::from_micros(500));
                continue;
            }
            if self.sup.known_down(id) {
                return Ok(());
            }
            let state = self.lxc_state(id)?;
            if state.is_empty() || state == "STOPPED" {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Backend {
                    backend: self.name.clone(),
                    reason: format!("container {id} still {state} after lxc-stop"),
                });
            }
            if state == "FROZEN" || state == "FREEZING" {
                // A frozen task only dies once thawed.
                let _ = self.run("lxc-unfreeze", id, &[]);
            }
            if let Some(init) = self.sup.init_pid(id) {
                // SAFETY: kill(2) on the init we were told about, checked against reuse.
                unsafe { libc::kill(init, libc::SIGKILL) };
            } else if state == "RUNNING" {
                let _ = self.run("lxc-stop", id, &["--kill", "--nowait"]);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops the LXC container and removes its definition (never its rootfs: that is
    /// the bundle's).
    fn undefine(&self, id: &str) -> Result<()> {
        let ct = self.ct_dir(id);
        if !ct.exists() {
            return Ok(());
        }
        self.stop_ct(id)?;
        fs::remove_dir_all(&ct).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(Error::io(format!("remove {}", ct.display()), e)),
        })
    }

    /// LXC 5 does not always remove the monitor's (and, after a failed start, the
    /// container's) empty cgroups; whatever is left of ours goes, in every hierarchy.
    fn remove_cgroups(&self, id: &str) {
        let mut leaves = vec![format!("nexcage.monitor/{id}")];
        leaves.extend(self.note(id, CGROUP_NOTE));
        let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
        roots.extend(
            fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        );
        for root in &roots {
            for leaf in &leaves {
                // rmdir only succeeds on an empty cgroup: nothing running is touched.
                let _ = fs::remove_dir(root.join(leaf));
            }
        }
    }

    fn pause(&self, id: &str, freeze: bool) -> Result<Exit> {
        if !self.sup.running(id) {
            return Err(Error::Usage("container not running".into()));
        }
        if !freeze && !self.sup.paused(id) {
            return Err(Error::Usage("container not paused".into()));
        }
        let tool = if freeze { "lxc-freeze" } else { "lxc-unfreeze" };
        let out = self.run(tool, id, &[])?;
        if !out.status.success() {
            return Err(self.failed(tool, &out));
        }
        Ok(0)
    }
}

impl Backend for Lxc {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, inv: &Invocation) -> Result<()> {
        host::refuse_checkpoint(inv.command, &self.name)
    }

    fn create(&self, inv: &Invocation, record: &Record) -> Result<Exit> {
        let (create, run) =
            host::create_args(inv.command).ok_or_else(|| self.unsupported(inv.command.name()))?;
        host::refuse_unsupported_flags(create, &self.name)?;
        let bundle = Bundle::load(&record.bundle)?;
        let inside = self.sup.inside(&record.id);
        let rootfs = bundle.checked_rootfs()?;
        let binary = host::Binary::bind_if_possible();
        let paths = translate::Paths {
            rootfs: &rootfs,
            runtime_dir: &inside,
            binary: match &binary {
                host::Binary::Bind(path) => Some(path),
                host::Binary::Copy => None,
            },
        };
        // Everything is checked before anything is made.
        let t = translate::translate(&bundle.spec, &self.cfg, &record.id, &paths)
            .map_err(|what| self.unsupported(&what))?;
        let mut start = vec![self.tool("lxc-start")?.into_os_string()];
        start.extend(["-n", &record.id, "-P"].map(OsString::from));
        start.push(self.lxcpath.clone().into_os_string());
        // The log is the start log, which is lxc-start's stderr, reopened through
        // /proc: LXC makes a log file's missing directories, and an lxc-start left by
        // a creator killed before it got this far would make the runtime dir again
        // after `delete` removed it.
        start.extend(["-d", "-l", "ERROR", "-o", "/proc/self/fd/2"].map(OsString::from));
        let console = host::create_terminal(&bundle, create, run, &self.name)?;
        let dir = self
            .sup
            .prepare(record, &bundle, &t.setup, t.mapped_root, &binary)?;
        fs::write(dir.join(MOUNT_POINT_NOTE), &t.mount_point).context(|| "note mount point")?;
        fs::write(dir.join(CGROUP_NOTE), &t.cgroup).context(|| "note cgroup")?;
        self.define(&record.id, &t.config)?;
        let launch = host::Launch {
            start_cmd: start,
            root_uid: t.root_uid,
            console,
            limits: None,
            // LXC joins the spec's namespaces itself (lxc.namespace.share.*).
            netns: None,
        };
        let Some(code) = self.sup.launch(&record.id, launch, create, run)? else {
            return Ok(0);
        };
        if run.is_some_and(|r| !r.keep) {
            self.remove(inv, &record.id)?;
        }
        Ok(code)
    }

    fn start(&self, _inv: &Invocation, record: &Record) -> Result<Exit> {
        self.sup.start(&record.id).map(|()| 0)
    }

    fn holds(&self, record: &Record) -> bool {
        self.sup.dir(&record.id).exists()
    }

    fn observe(&self, _inv: &Invocation, records: &[&Record]) -> Result<HashMap<String, Observed>> {
        Ok(records
            .iter()
            .filter_map(|r| {
                let mut seen = self.sup.observe(&r.id)?;
                if seen.status == Status::Running && self.sup.paused(&r.id) {
                    seen.status = Status::Paused;
                }
                Some((r.id.clone(), seen))
            })
            .collect())
    }

    fn kill(&self, _inv: &Invocation, record: &Record, signal: i32, all: bool) -> Result<Exit> {
        self.sup.kill(&record.id, signal, all)
    }

    fn delete(&self, inv: &Invocation, record: &Record, _force: bool) -> Result<Exit> {
        self.remove(inv, &record.id).map(|()| 0)
    }

    /// Idempotent, from any state: holder gone, LXC container stopped and its
    /// definition removed (never its rootfs: that is the bundle's), runtime dir removed.
    fn remove(&self, _inv: &Invocation, id: &str) -> Result<()> {
        self.sup.kill_holder(id);
        let ours = self.sup.dir(id).join(DEFINED_NOTE).exists();
        if ours {
            self.undefine(id)?;
        }
        self.remove_cgroups(id);
        self.sup.remove_dir(id)
    }

    fn held(&self) -> Vec<String> {
        crate::ids::dirs_in(&self.sup.base)
    }

    /// In nexcage's own lxcpath every definition is one of ours: those whose runtime
    /// dir is gone are stopped and removed. A configured (shared) lxcpath may hold
    /// anyone's, and is left alone.
    fn collect_strays(&self) -> Vec<String> {
        if self.cfg.lxcpath.is_some() {
            return Vec::new();
        }
        let mut done = Vec::new();
        for id in crate::ids::dirs_in(&self.lxcpath) {
            if self.sup.dir(&id).exists() {
                continue;
            }
            match self.undefine(&id) {
                Ok(()) => {
                    self.remove_cgroups(&id);
                    done.push(format!("LXC container {id} without a runtime directory"));
                }
                Err(e) => log::warn!("gc: LXC container {id}: {e}"),
            }
        }
        done
    }

    fn operate(&self, inv: &Invocation, record: &Record) -> Result<Exit> {
        let id = &record.id;
        match inv.command {
            cli::Command::Exec(a) => {
                if !a.ignore_paused && self.sup.paused(id) {
                    return Err(Error::Usage("cannot exec in a paused container".into()));
                }
                let mount_point = self
                    .note(id, MOUNT_POINT_NOTE)
                    .unwrap_or_else(|| crate::supervise::MOUNT_POINT.into());
                self.sup.exec(a, id, &mount_point)
            }
            cli::Command::Ps(a) => self.sup.ps(a, id, false),
            cli::Command::Events(a) => self.sup.events(&record.id, a),
            cli::Command::Update(a) => self
                .sup
                .update(id, &crate::supervise::update::Limits::from_args(a)?),
            cli::Command::Pause(_) => self.pause(id, true),
            cli::Command::Resume(_) => self.pause(id, false),
            other => Err(self.unsupported(other.name())),
        }
    }
}
