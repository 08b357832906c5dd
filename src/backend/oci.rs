//! Backends of type `oci`: crun, runc or another runc-compatible runtime, to which a
//! container is handed whole. Each runs with its own `--root` under nexcage's root.
//! Commands that end in the delegate (start, kill, exec, ...) replace this process
//! with it, so stdio, tty, signals and exit status are exactly the delegate's.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::{Backend, Exit, Invocation, Observed, Status};
use crate::cli::{self, LogFormat};
use crate::config::OciFlavor;
use crate::error::{Error, IoContext, Result};
use crate::process::{self, exit_code};
use crate::state::Record;

pub struct Oci {
    name: String,
    path: PathBuf,
    flavor: OciFlavor,
    root: PathBuf,
}

/// runc flags that crun (as packaged) does not accept, by subcommand. Refused up front
/// with a clear message rather than crun's usage dump.
const CRUN_UNKNOWN_FLAGS: &[(&str, &[&str])] = &[
    ("create", &["--pidfd-socket"]),
    ("run", &["--pidfd-socket", "--keep"]),
    (
        "exec",
        &["--pidfd-socket", "--additional-gids", "--ignore-paused"],
    ),
    (
        "update",
        &["--cpu-idle", "--l3-cache-schema", "--mem-bw-schema"],
    ),
];

/// Subcommands not every runc-compatible runtime has (crun 1.8 lacks them).
const OPTIONAL_COMMANDS: &[&str] = &["events", "checkpoint", "restore"];

/// The fields of a delegate's `state` / `list --format json` entry that we use.
#[derive(Deserialize)]
struct DelegateState {
    id: String,
    #[serde(default)]
    pid: i32,
    status: Status,
}

impl Oci {
    pub fn new(name: &str, path: &Path, flavor: OciFlavor, root: PathBuf) -> Oci {
        Oci {
            name: name.to_string(),
            path: path.to_path_buf(),
            flavor,
            root,
        }
    }

    /// The delegate with its global flags: ours, mapped to its dialect.
    fn command(&self, inv: &Invocation) -> Result<Command> {
        let g = inv.global;
        let mut cmd = Command::new(&self.path);
        cmd.arg("--root").arg(&self.root);
        if let Some(log) = g.log.as_deref().filter(|l| !l.is_empty()) {
            cmd.arg("--log").arg(log);
        }
        if g.log_format == LogFormat::Json {
            cmd.arg("--log-format").arg("json");
        }
        if g.debug {
            cmd.arg("--debug");
        }
        if g.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        if let Some(rootless) = &g.rootless {
            cmd.arg(format!("--rootless={rootless}"));
        }
        match (g.cgroup_manager.as_deref(), self.flavor) {
            (None, _) => {}
            (Some(m), OciFlavor::Crun) => {
                cmd.arg(format!("--cgroup-manager={m}"));
            }
            // runc has no --cgroup-manager; its two managers map onto its own flags.
            (Some("cgroupfs"), OciFlavor::Runc) => {}
            (Some("systemd"), OciFlavor::Runc) => {
                cmd.arg("--systemd-cgroup");
            }
            (Some(m), OciFlavor::Runc) => {
                return Err(self.unsupported(format!("--cgroup-manager={m}")));
            }
        }
        // runc >= 1.4 rejects --criu, so it goes only where it matters.
        if let Some(criu) = &g.criu
            && self.flavor == OciFlavor::Runc
            && matches!(inv.command.name(), "checkpoint" | "restore")
        {
            cmd.arg("--criu").arg(criu);
        }
        Ok(cmd)
    }

    fn unsupported(&self, what: String) -> Error {
        Error::Unsupported {
            command: what,
            backend: self.name.clone(),
        }
    }

    /// Whether the delegate holds anything for `id` (its directory appears before its
    /// state file, and stays if a create was interrupted).
    fn knows(&self, id: &str) -> bool {
        self.root.join(id).exists()
    }

    /// Whether the delegate has written its state for `id`, so `state` can answer.
    fn state_written(&self, id: &str) -> bool {
        let file = match self.flavor {
            OciFlavor::Crun => "status",
            OciFlavor::Runc => "state.json",
        };
        self.root.join(id).join(file).exists()
    }

    fn supports(&self, sub: &str) -> bool {
        self.flavor == OciFlavor::Runc
            || Command::new(&self.path)
                .args([sub, "--help"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    fn capture(&self, mut cmd: Command) -> Result<std::process::Output> {
        cmd.stdin(Stdio::null())
            .output()
            .context(|| format!("run {}", self.path.display()))
    }
}

impl Backend for Oci {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, inv: &Invocation) -> Result<()> {
        let sub = inv.command.name();
        self.command(inv)?;
        if OPTIONAL_COMMANDS.contains(&sub) && !self.supports(sub) {
            return Err(self.unsupported(sub.to_string()));
        }
        if self.flavor == OciFlavor::Crun {
            let unknown = CRUN_UNKNOWN_FLAGS
                .iter()
                .filter(|(cmd, _)| *cmd == sub)
                .flat_map(|(_, flags)| flags.iter())
                .find(|flag| inv.flags.iter().any(|f| f == **flag));
            if let Some(flag) = unknown {
                return Err(self.unsupported(format!("{sub} {flag}")));
            }
        }
        Ok(())
    }

    fn holds(&self, record: &Record) -> bool {
        self.knows(&record.id)
    }

    fn create(&self, inv: &Invocation, record: &Record) -> Result<Exit> {
        let mut cmd = self.command(inv)?;
        cmd.arg(inv.command.name())
            .args(&inv.flags)
            .arg("--bundle")
            .arg(&record.bundle)
            .arg(&record.id);
        let foreground = match inv.command {
            cli::Command::Run(r) => !r.detach,
            cli::Command::Restore(r) => !r.detach,
            _ => false,
        };
        // In the foreground the delegate takes our place: our caller reaps it, signals
        // reach it directly, and no process of ours costs the run time.
        if foreground {
            return Err(process::exec(cmd));
        }
        let status = {
            process::spawn(&mut cmd)?
                .wait()
                .context(|| format!("wait for {}", self.path.display()))?
        };
        Ok(exit_code(status))
    }

    fn start(&self, inv: &Invocation, record: &Record) -> Result<Exit> {
        // crun's own answer is a missing fifo's path; both keep the fifo until start.
        let state = self.root.join(&record.id);
        if self.flavor == OciFlavor::Crun && state.is_dir() && !state.join("exec.fifo").exists() {
            return Err(Error::Usage(
                "cannot start a container that has already started (running or stopped)".into(),
            ));
        }
        let mut cmd = self.command(inv)?;
        cmd.arg("start").arg(&record.id);
        Err(process::exec(cmd))
    }

    fn observe(&self, inv: &Invocation, records: &[&Record]) -> Result<HashMap<String, Observed>> {
        let known: Vec<&Record> = records
            .iter()
            .copied()
            .filter(|r| self.knows(&r.id))
            .collect();
        // crun's status read as crun reads it, which is faster than running crun.
        if self.flavor == OciFlavor::Crun {
            let fast: Option<HashMap<String, Observed>> = known
                .iter()
                .filter(|r| self.state_written(&r.id))
                .map(|r| Some((r.id.clone(), super::crun_state::observe(&self.root, &r.id)?)))
                .collect();
            if let Some(observed) = fast {
                return Ok(observed);
            }
        }
        let entries: Vec<DelegateState> = match known.as_slice() {
            [] => Vec::new(),
            // Still being set up by a foreground `run`: nothing to ask yet.
            [one] if !self.state_written(&one.id) => Vec::new(),
            [one] => {
                let mut cmd = self.command(inv)?;
                cmd.arg("state").arg(&one.id);
                let out = self.capture(cmd)?;
                if !out.status.success() {
                    // Deleted while we asked: nothing to report.
                    if !self.state_written(&one.id) {
                        return Ok(HashMap::new());
                    }
                    return Err(self.failed("state", &out.stderr));
                }
                vec![serde_json::from_slice(&out.stdout).map_err(|e| self.garbled("state", e))?]
            }
            _ => {
                let mut cmd = self.command(inv)?;
                cmd.args(["list", "--format", "json"]);
                let out = self.capture(cmd)?;
                if !out.status.success() {
                    return Err(self.failed("list", &out.stderr));
                }
                // runc prints `null` for no containers.
                serde_json::from_slice::<Option<Vec<DelegateState>>>(&out.stdout)
                    .map_err(|e| self.garbled("list", e))?
                    .unwrap_or_default()
            }
        };
        Ok(entries
            .into_iter()
            .map(|s| {
                (
                    s.id,
                    Observed {
                        pid: s.pid,
                        status: s.status,
                    },
                )
            })
            .collect())
    }

    fn kill(&self, inv: &Invocation, record: &Record, signal: i32, all: bool) -> Result<Exit> {
        let mut cmd = self.command(inv)?;
        cmd.arg("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(&record.id).arg(signal.to_string());
        Err(process::exec(cmd))
    }

    fn delete(&self, inv: &Invocation, record: &Record, force: bool) -> Result<Exit> {
        if !self.knows(&record.id) {
            return Ok(0);
        }
        let mut cmd = self.command(inv)?;
        cmd.arg("delete");
        if force {
            cmd.arg("--force");
        }
        cmd.arg(&record.id);
        let status = process::spawn(&mut cmd)?
            .wait()
            .context(|| format!("wait for {}", self.path.display()))?;
        Ok(exit_code(status))
    }

    fn remove(&self, inv: &Invocation, id: &str) -> Result<()> {
        if !self.knows(id) {
            return Ok(());
        }
        let mut cmd = self.command(inv)?;
        cmd.args(["delete", "--force"]).arg(id);
        cmd.stdout(Stdio::null());
        let out = self.capture(cmd)?;
        if out.status.success() || !self.knows(id) {
            Ok(())
        } else {
            Err(self.failed("delete --force", &out.stderr))
        }
    }

    fn held(&self) -> Vec<String> {
        crate::ids::dirs_in(&self.root)
    }

    /// Everything the delegate made is under its root, by id.
    fn collect_strays(&self) -> Vec<String> {
        Vec::new()
    }

    fn operate(&self, inv: &Invocation, record: &Record) -> Result<Exit> {
        let extra: &[OsString] = match inv.command {
            cli::Command::Exec(a) => &a.command,
            cli::Command::Ps(a) => &a.ps_args,
            _ => &[],
        };
        let mut cmd = self.command(inv)?;
        cmd.arg(inv.command.name());
        if let cli::Command::Exec(a) = inv.command {
            // runc adds `--env` to the container's environment; crun 1.8 replaces it
            // (losing PATH), so crun is given the container's variables first.
            if self.flavor == OciFlavor::Crun && !a.env.is_empty() && a.process.is_none() {
                for var in &record.process_env {
                    cmd.arg("--env").arg(var);
                }
            }
        }
        cmd.args(&inv.flags).arg(&record.id).args(extra);
        Err(process::exec(cmd))
    }
}

impl Oci {
    fn failed(&self, what: &str, stderr: &[u8]) -> Error {
        Error::Backend {
            backend: self.name.clone(),
            reason: format!("{what} failed: {}", String::from_utf8_lossy(stderr).trim()),
        }
    }

    fn garbled(&self, what: &str, e: serde_json::Error) -> Error {
        Error::Backend {
            backend: self.name.clone(),
            reason: format!("unreadable {what} output: {e}"),
        }
    }
}
