//! The host side of the holder + init mechanism, shared by the backends that use it:
//! the per-container runtime directory, the holder process, and how `start`, `state`,
//! `kill`, `exec` and `delete` reach the container through them.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use super::hooks::{Hooks, Kind};
use super::protocol::SocketDir;
use super::{
    BINARY, HOLDER_PID, INIT_PID, INIT_SOCKET, INSIDE, MANAGER_PID, PROCESS, SECCOMP_BPF, SETUP,
    SOCKET, STARTED,
};
use crate::backend::{Exit, Observed, Status};
use crate::bundle::Bundle;
use crate::cli::{Command, CreateArgs, ExecArgs, RunArgs};
use crate::error::{Error, IoContext, Result};
use crate::process::{self, exit_code};
use crate::state::Record;

/// What init does inside the container before it runs the workload, besides the
/// process itself (process.json): the parts of the spec that need privileges the
/// workload may not have.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Setup {
    /// Paths covered (/dev/null over files, an empty read-only tmpfs over directories).
    #[serde(default)]
    pub masked_paths: Vec<String>,
    /// Paths bind-mounted read-only onto themselves.
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    /// Remount `/` read-only once everything else is mounted.
    #[serde(default)]
    pub readonly_root: bool,
    /// Mounts made read-only once what is mounted below them is (the tmpfs holding a
    /// v1 /sys/fs/cgroup).
    #[serde(default)]
    pub readonly_mounts: Vec<String>,
    /// runc's /dev symlinks (ptmx to pts/ptmx, fd, stdin, stdout, stderr) in a /dev
    /// of the container's own.
    #[serde(default)]
    pub dev_symlinks: bool,
    /// Sysctls written under /proc/sys, for a manager that cannot be told them
    /// (checked by `spec_check::sysctl`: only the container's own namespaces').
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// The spec's cgroup mount (path, read-only), made by init as the container's own
    /// cgroup namespace shows it, for a manager that mounts none (LXC ignores
    /// `cgroup:*` auto-mounts when it makes a cgroup namespace, and Proxmox leaves the
    /// mount to the container's init).
    #[serde(default)]
    pub cgroupfs: Option<(String, bool)>,
    /// Filesystems init mounts once the manager's are there: the spec's own, with its
    /// options (a `/dev/shm` over Proxmox's, the `/dev/mqueue` it leaves out).
    #[serde(default)]
    pub mounts: Vec<FsMount>,
    /// The spec's restricting options (`ro`, `nosuid`, `nodev`, `noexec`) for mounts
    /// the manager makes of its own (Proxmox's `/proc`, `/sys`, `/dev`, `/dev/pts`),
    /// added by init.
    #[serde(default)]
    pub restrict: Vec<(String, Vec<String>)>,
}

/// A filesystem for init to mount (see `Setup::mounts`); the destination is one the
/// backend chose, not a path from the image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FsMount {
    pub destination: String,
    pub fstype: String,
    pub source: String,
    pub options: Vec<String>,
    /// `source` is a mount the manager made inside (a bind of the host's, staged where
    /// nothing else is mounted): put at `destination` as it is, and unmounted there.
    #[serde(default)]
    pub staged: bool,
}

impl Setup {
    /// What the spec asks of init.
    pub fn from_spec(spec: &oci_spec::runtime::Spec) -> Setup {
        let linux = spec.linux().clone().unwrap_or_default();
        Setup {
            masked_paths: linux.masked_paths().clone().unwrap_or_default(),
            readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
            readonly_root: spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
            readonly_mounts: Vec::new(),
            dev_symlinks: false,
            sysctls: Vec::new(),
            cgroupfs: None,
            mounts: Vec::new(),
            restrict: Vec::new(),
        }
    }
}

/// How long init may take to call in after the start command returned.
const INIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long the holder may take to join the container.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The start command's output, and LXC's log.
pub const START_LOG: &str = "start.log";

/// How a backend's container comes up.
pub struct Launch {
    /// Starts the container with `nexcage init` as its init (`lxc-start -d`,
    /// `pct start`), and returns.
    pub start_cmd: Vec<OsString>,
    /// Host uid of the container's root, whom init runs as.
    pub root_uid: u32,
    /// The engine's console socket, connected, for a container with a terminal
    /// (see [`create_terminal`]).
    pub console: Option<UnixStream>,
    /// Limits for the container's own cgroup, for a manager that puts its limits on
    /// a parent (Proxmox: `lxc/<vmid>`, in MiB; init in `lxc/<vmid>/ns`), so that the
    /// container sees the spec's exact figures.
    pub limits: Option<super::update::Limits>,
    /// A network namespace the holder joins instead of init's: the spec's, for a
    /// manager that gives the container a network of its own (Proxmox: `net0`).
    pub netns: Option<PathBuf>,
}

/// Runtime directories, one per container, under `base`; each is bind-mounted
/// read-only into its container at the backend's mount point.
pub struct Supervisor {
    pub backend: String,
    pub base: PathBuf,
}

/// How nexcage's binary gets into the container (as `<mount point>/nexcage`).
#[derive(Debug, Clone, PartialEq)]
pub enum Binary {
    /// A copy in the runtime directory (for managers that mount only directories).
    Copy,
    /// The host's binary, which the backend bind-mounts read-only onto an empty
    /// placeholder in the runtime directory: nothing is copied.
    Bind(PathBuf),
}

impl Binary {
    /// Bind where the running binary can be named, else copy.
    pub fn bind_if_possible() -> Binary {
        match fs::read_link("/proc/self/exe") {
            Ok(path) if path.is_file() => Binary::Bind(path),
            _ => Binary::Copy,
        }
    }
}

impl Supervisor {
    pub fn dir(&self, id: &str) -> PathBuf {
        self.base.join(id)
    }

    /// What the backend mounts into the container (see [`super::INSIDE`]).
    pub fn inside(&self, id: &str) -> PathBuf {
        self.dir(id).join(INSIDE)
    }

    /// Makes the runtime directory: nexcage's static binary (init in any rootfs), the
    /// process and the setup for init, the compiled seccomp filter and the hooks.
    /// `mapped_root`: the container's root is a mapped uid that must be able to reach
    /// the directory.
    pub fn prepare(
        &self,
        record: &Record,
        bundle: &Bundle,
        setup: &Setup,
        mapped_root: bool,
        binary: &Binary,
    ) -> Result<PathBuf> {
        let process = bundle
            .spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::Bundle {
                path: record.bundle.clone(),
                reason: "config.json has no \"process\"".into(),
            })?;
        // Refused before anything is made.
        let seccomp = match bundle
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
        {
            Some(s) => Some(super::seccomp::compile(s)?),
            None => None,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.base)
            .context(|| format!("create {}", self.base.display()))?;
        if mapped_root {
            for dir in self.base.ancestors() {
                let mode = fs::metadata(dir)
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0);
                if mode & 0o001 == 0 {
                    return Err(Error::Usage(format!(
                        "unprivileged containers need {} to be searchable by others (o+x)",
                        dir.display()
                    )));
                }
            }
        }
        let dir = self.dir(&record.id);
        // A mapped root reaches `inside` (the mount's source) through this directory.
        fs::DirBuilder::new()
            .mode(if mapped_root { 0o711 } else { 0o700 })
            .create(&dir)
            .context(|| format!("create {}", dir.display()))?;
        let inside = dir.join(INSIDE);
        fs::DirBuilder::new()
            .mode(0o711)
            .create(&inside)
            .context(|| format!("create {}", inside.display()))?;
        match binary {
            Binary::Copy => {
                let exe = fs::read_link("/proc/self/exe").context(|| "find own binary")?;
                fs::copy(&exe, inside.join(BINARY))
                    .context(|| "copy nexcage into the runtime dir")?;
            }
            Binary::Bind(_) => write_new(&inside.join(BINARY), b"", 0o555)?,
        }
        // The environment may hold secrets: only the host's root reads the process.
        let body = serde_json::to_vec(process).map_err(|e| Error::Usage(e.to_string()))?;
        write_new(&dir.join(PROCESS), &body, 0o600)?;
        let body = serde_json::to_vec(setup).map_err(|e| Error::Usage(e.to_string()))?;
        write_new(&inside.join(SETUP), &body, 0o644)?;
        if let Some(program) = seccomp {
            // `enter` loads it inside the container, as the container's root.
            write_new(&inside.join(SECCOMP_BPF), &program.to_bytes(), 0o644)?;
        }
        if let Some(hooks) = Hooks::from_spec(&bundle.spec, &record.id, &record.bundle) {
            hooks.save(&dir)?;
        }
        Ok(dir)
    }

    /// The rest of `create`/`run` once the container is defined: start it
    /// (`start_cmd`, e.g. `lxc-start -d`), wait for its init to call in, place the
    /// holder in it (its pid goes to `--pid-file`), run the create hooks; for `run`,
    /// start the workload too. Returns the workload's exit status for a foreground
    /// `run`, None when the container stays.
    pub fn launch(
        &self,
        id: &str,
        launch: Launch,
        create: &CreateArgs,
        run: Option<&RunArgs>,
    ) -> Result<Option<i32>> {
        let dir = self.dir(id);
        // The holder's: in the host-only part, root's (umask-proof).
        let listener = SocketDir::open(&dir)?.bind(SOCKET)?;
        fs::set_permissions(dir.join(SOCKET), fs::Permissions::from_mode(0o600))
            .context(|| "chmod holder socket")?;
        // init's, inside: it connects as the container's root, and only once.
        let inside = dir.join(INSIDE);
        let init_listener = SocketDir::open(&inside)?.bind(INIT_SOCKET)?;
        let init_socket = inside.join(INIT_SOCKET);
        std::os::unix::fs::chown(&init_socket, Some(launch.root_uid), None)
            .context(|| "chown init socket")?;
        fs::set_permissions(&init_socket, fs::Permissions::from_mode(0o600))
            .context(|| "chmod init socket")?;
        self.start_container(&dir, &launch.start_cmd)?;
        let init = super::protocol::accept_within(&init_listener, INIT_TIMEOUT)
            .map_err(|e| self.failed(format!("{e} ({})", start_log_reason(&dir))));
        drop(init_listener);
        let _ = fs::remove_file(&init_socket);
        let init = init?;
        // The peer's pid is translated into our (the host's) pid namespace.
        let init_pid =
            nix::sys::socket::getsockopt(&init, nix::sys::socket::sockopt::PeerCredentials)
                .context(|| "peer credentials of init")?
                .pid();
        let _ = init.set_read_timeout(Some(INIT_TIMEOUT));
        if !super::join::is_in_a_container(init_pid) {
            // An init that failed says so and exits at once, before we can look at it:
            // its error is worth more than ours (and failing a create is all it does).
            let gone = !Path::new(&format!("/proc/{init_pid}")).exists();
            if gone
                && let Ok(Some(line)) = super::protocol::read_line(&init)
                && let Some(reason) = line.strip_prefix("error: ")
            {
                return Err(self.failed(format!("init: {reason}")));
            }
            return Err(self.failed(format!(
                "the caller on the init socket (pid {init_pid}) is not in the container"
            )));
        }
        match super::protocol::read_line(&init)? {
            Some(line) if line == "init" => {}
            Some(line) if line.starts_with("error: ") => {
                return Err(self.failed(line.trim_start_matches("error: ").to_string()));
            }
            _ => return Err(self.failed("unexpected caller on the init socket".into())),
        }
        let _ = init.set_read_timeout(None);
        write_pid_note(&dir.join(INIT_PID), init_pid)?;
        if let Some(manager) = parent_of(init_pid) {
            write_pid_note(&dir.join(MANAGER_PID), manager)?;
        }
        if create.no_new_keyring {
            fs::write(dir.join(NO_NEW_KEYRING), "").context(|| "note --no-new-keyring")?;
        }
        let args = super::holder::Args {
            dir: dir.clone(),
            init_pid,
            fd_base: 3 + create.preserve_fds.unwrap_or(0) as i32 + process::listen_fds(),
            console: launch.console.is_some(),
            netns: launch.netns,
            session_keyring: session_keyring(&dir),
        };
        let (child, ready) =
            self.spawn_holder(&args, [listener.into(), init.into()], launch.console)?;
        let holder = child.id();
        let placed = write_pid_note(&dir.join(HOLDER_PID), holder)
            .and_then(|()| self.place(&dir, holder, ready, create, launch.limits.as_ref()));
        if let Err(e) = placed {
            // Reaped here: a zombie in the container's pid namespace would keep the
            // namespace, and so the container, from ever ending.
            child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let Some(run) = run else { return Ok(None) };
        if let Err(e) = self.start(id) {
            child.kill();
            let _ = child.wait();
            return Err(e);
        }
        if run.detach {
            return Ok(None);
        }
        let status = child.wait()?;
        Ok(Some(process::exit_code(status)))
    }

    /// Once the holder runs: its word that it is in the container, the create hooks,
    /// the pid file.
    fn place(
        &self,
        dir: &Path,
        holder: i32,
        ready: fs::File,
        create: &CreateArgs,
        limits: Option<&super::update::Limits>,
    ) -> Result<()> {
        wait_ready(ready).map_err(|reason| {
            // What runc says of a workload it cannot exec is the create's error.
            if reason.starts_with("exec: ") || reason.starts_with("chdir to cwd") {
                Error::Usage(reason)
            } else {
                self.failed(reason)
            }
        })?;
        if let Some(limits) = limits {
            limits.apply(holder)?;
        }
        if let Some(hooks) = Hooks::load(dir)? {
            hooks.run(Kind::Prestart, "creating", holder, None)?;
            hooks.run(Kind::CreateRuntime, "creating", holder, None)?;
            // In all the container's namespaces, its pid namespace too (from birth).
            let ns = super::join::Namespaces::of(holder, &[])?;
            in_pid_namespace_of(holder, || {
                hooks.run(Kind::CreateContainer, "creating", holder, Some(&ns))
            })?;
        }
        if let Some(socket) = &create.pidfd_socket {
            super::protocol::send_pidfd(socket, holder)?;
        }
        if let Some(pid_file) = &create.pid_file {
            write_pid_file(pid_file, holder)?;
        }
        Ok(())
    }

    fn failed(&self, reason: String) -> Error {
        Error::Backend {
            backend: self.backend.clone(),
            reason,
        }
    }

    /// Runs the backend's start command with its output in `start.log`; the log is
    /// opened for appending, so that the command may also name it as its own log.
    fn start_container(&self, dir: &Path, start_cmd: &[OsString]) -> Result<()> {
        let log_path = dir.join(START_LOG);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .context(|| format!("open {}", log_path.display()))?;
        let err_log = log.try_clone().context(|| "dup start.log")?;
        let (program, args) = start_cmd
            .split_first()
            .ok_or_else(|| self.failed("no start command".into()))?;
        let status = std::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .status()
            .context(|| format!("run {}", program.to_string_lossy()))?;
        if status.success() {
            return Ok(());
        }
        let command: Vec<_> = start_cmd.iter().map(|a| a.to_string_lossy()).collect();
        Err(self.failed(format!(
            "{} failed ({status}): {}",
            command.join(" "),
            start_log_reason(dir)
        )))
    }

    /// Forks the holder in init's pid namespace (a process joins a pid namespace
    /// only when it is made), with our stdio (the container's, unless it has a
    /// terminal) and, from fd `args.fd_base` on, the listening socket, init's
    /// connection, a pipe on which it says when it is in place, and the console
    /// socket if any. Returns the child and that pipe.
    fn spawn_holder(
        &self,
        args: &super::holder::Args,
        passed: [OwnedFd; 2],
        console: Option<UnixStream>,
    ) -> Result<(HolderChild, fs::File)> {
        let (ready_r, ready_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context(|| "pipe")?;
        let [listener, init] = passed;
        // Without a console the last one is a placeholder, never used.
        let last = console
            .as_ref()
            .map_or(ready_w.as_raw_fd(), |c| c.as_raw_fd());
        let fds = [
            listener.as_raw_fd(),
            init.as_raw_fd(),
            ready_w.as_raw_fd(),
            last,
        ];
        // A fork copies only the calling thread: another one's locks (the
        // allocator's) would stay taken in the child.
        if threads() != Some(1) {
            return Err(self.failed("cannot fork the holder: nexcage runs other threads".into()));
        }
        let pid = in_pid_namespace_of(args.init_pid, || {
            // SAFETY: single-threaded (checked above); the child never returns here.
            match unsafe { libc::fork() } {
                -1 => Err(Error::io(
                    "fork the holder",
                    std::io::Error::last_os_error(),
                )),
                0 => become_holder(args, fds),
                pid => Ok(pid),
            }
        })?;
        Ok((HolderChild(pid), ready_r.into()))
    }

    /// The holder's pid, if it is still the process we started.
    pub fn holder(&self, id: &str) -> Option<i32> {
        read_pid_note(&self.dir(id).join(HOLDER_PID))
    }

    /// Host pid of the container's init (noted by the holder from the socket's peer
    /// credentials), if it still runs.
    pub fn init_pid(&self, id: &str) -> Option<i32> {
        read_pid_note(&self.dir(id).join(INIT_PID))
    }

    /// The process that started init (LXC's monitor), if it still runs.
    pub fn manager_pid(&self, id: &str) -> Option<i32> {
        read_pid_note(&self.dir(id).join(MANAGER_PID))
    }

    /// Whether init and the process that started it are known to have ended (so the
    /// container is down without asking its manager).
    pub fn known_down(&self, id: &str) -> bool {
        let dir = self.dir(id);
        dir.join(MANAGER_PID).exists()
            && self.init_pid(id).is_none()
            && self.manager_pid(id).is_none()
    }

    pub fn started(&self, id: &str) -> bool {
        self.dir(id).join(STARTED).exists()
    }

    /// `start`: the holder runs the startContainer hooks and becomes the workload;
    /// then the poststart hooks run here. A failing poststart hook is reported, and the
    /// container goes on running (runtime spec).
    pub fn start(&self, id: &str) -> Result<()> {
        if self.started(id) {
            let running = self
                .observe(id)
                .is_some_and(|o| o.status != Status::Stopped);
            return Err(Error::Usage(
                if running {
                    "cannot start an already running container"
                } else {
                    "cannot start a container that has stopped"
                }
                .into(),
            ));
        }
        let dir = self.dir(id);
        let stopped = || Error::Usage("cannot start a container that has stopped".into());
        let mut conn = self.connect(id).ok_or_else(stopped)?;
        super::protocol::send_line(&mut conn, "start")?;
        match super::protocol::read_line(&conn)? {
            Some(line) if line == "ok" => {}
            Some(line) => {
                return Err(self.failed(line.strip_prefix("error: ").unwrap_or(&line).to_string()));
            }
            None => return Err(stopped()),
        }
        if let (Some(hooks), Some(pid)) = (Hooks::load(&dir)?, self.holder(id))
            && let Err(e) = hooks.run(Kind::Poststart, "running", pid, None)
        {
            log::warn!("container {id}: {e}");
            eprintln!("warning: {e}");
        }
        Ok(())
    }

    /// A connection to the holder's socket, if it listens.
    pub fn connect(&self, id: &str) -> Option<UnixStream> {
        SocketDir::open(&self.dir(id))
            .ok()
            .and_then(|d| d.connect(SOCKET).ok())
    }

    /// created (holder waiting), running (holder waiting on the workload) or stopped.
    pub fn observe(&self, id: &str) -> Option<Observed> {
        if !self.dir(id).exists() {
            return None;
        }
        Some(match self.holder(id) {
            Some(pid) if self.started(id) => Observed {
                pid,
                status: Status::Running,
            },
            Some(pid) => Observed {
                pid,
                status: Status::Created,
            },
            None => Observed {
                pid: 0,
                status: Status::Stopped,
            },
        })
    }

    /// runc's `kill`: the signal goes to the container's process (the holder before
    /// start, the workload after: they are one process); with `all`, to every process
    /// in the container's cgroup.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<Exit> {
        let not_running = || Error::Usage("container not running".into());
        let pid = self.holder(id).ok_or_else(not_running)?;
        let mut targets = vec![pid];
        if all {
            targets.extend(
                super::ps::cgroup_pids(pid, false)?
                    .into_iter()
                    .filter(|p| *p != pid),
            );
        }
        for target in targets {
            // SAFETY: kill(2) with pids we found and a validated signal number.
            if unsafe { libc::kill(target, signal) } < 0 && target == pid {
                return Err(Error::io("kill", std::io::Error::last_os_error()));
            }
        }
        Ok(0)
    }

    /// runc's `update`: the container's live cgroups (the holder's, which are the
    /// container's).
    pub fn update(&self, id: &str, limits: &super::update::Limits) -> Result<Exit> {
        let pid = self
            .holder(id)
            .ok_or_else(|| Error::Usage("container not running".into()))?;
        limits.apply(pid)?;
        Ok(0)
    }

    /// runc's `events` from the container's cgroups.
    pub fn events(&self, id: &str, a: &crate::cli::EventsArgs) -> Result<Exit> {
        super::events::events(a, id, self.holder(id), &|| self.holder(id).is_some())
    }

    /// `pause`/`resume` with the cgroup freezer of the container's cgroup, as runc
    /// does (for managers without a freeze command of their own).
    pub fn freeze(&self, id: &str, frozen: bool) -> Result<Exit> {
        let not_running = || Error::Usage("container not running".into());
        if !self.running(id) {
            return Err(not_running());
        }
        let pid = self.holder(id).ok_or_else(not_running)?;
        if !frozen && !super::freeze::is_frozen(pid) {
            return Err(Error::Usage("container not paused".into()));
        }
        super::freeze::set(pid, frozen)?;
        Ok(0)
    }

    /// Whether the container's cgroup is frozen.
    pub fn paused(&self, id: &str) -> bool {
        self.holder(id).is_some_and(super::freeze::is_frozen)
    }

    pub fn running(&self, id: &str) -> bool {
        self.started(id) && self.holder(id).is_some()
    }

    pub fn kill_holder(&self, id: &str) {
        if let Some(pid) = self.holder(id) {
            // SAFETY: kill(2) on the holder we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // A creator killed between spawning the holder and noting its pid: the socket
        // was listening before the holder existed, so it gets this even if it has not
        // reached `accept` yet.
        if let Some(mut conn) = SocketDir::open(&self.dir(id))
            .ok()
            .and_then(|d| d.connect(SOCKET).ok())
        {
            let _ = super::protocol::send_line(&mut conn, "stop");
        }
    }

    /// The end of `delete`: the poststop hooks (a failure is reported, the delete goes
    /// on), then the runtime directory.
    pub fn remove_dir(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        if let Ok(Some(hooks)) = Hooks::load(&dir)
            && let Err(e) = hooks.run(Kind::Poststop, "stopped", 0, None)
        {
            log::warn!("container {id}: {e}");
            eprintln!("warning: {e}");
        }
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// runc's `exec`: a child born in the container's pid namespace moves into its
    /// cgroups and other namespaces (those of the container's process), then execs
    /// `nexcage enter` from the runtime directory's read-only mount at `mount_point`,
    /// which becomes the process. So the pid (`--pid-file`) is the process's own, a
    /// descendant of the caller that engines reap, and no attach tool sits between.
    pub fn exec(&self, a: &ExecArgs, id: &str, mount_point: &str) -> Result<Exit> {
        let stopped = || Error::Usage("cannot exec in a stopped container".into());
        if !self.running(id) {
            return Err(stopped());
        }
        let holder = self.holder(id).ok_or_else(stopped)?;
        let dir = self.dir(id);
        let super::exec::Enter {
            mut args,
            env,
            terminal,
        } = super::exec::enter_args(a, &dir, mount_point)?;
        let console = super::exec::console_socket(a, terminal)?;
        // `enter` makes the pty inside and sends its master there; it reports on the
        // pipe why it cannot exec the process, and the pipe closes when it has.
        // Both above the fds the caller hands on (--preserve-fds).
        let base = 3 + a.preserve_fds.unwrap_or(0) as i32;
        let (ready_r, ready_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context(|| "pipe")?;
        args.splice(2..2, ["--ready-fd".into(), (base + 1).to_string().into()]);
        if console.is_some() {
            args.splice(2..2, ["--console-fd".into(), base.to_string().into()]);
        }
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| Error::Usage("no exec command".into()))?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(rest)
            .env_clear()
            .envs(super::identity::env_pairs(&env));
        let join = super::join::Join::prepare(holder)?;
        let console_fd = console.as_ref().map(|c| c.as_raw_fd());
        let ready_fd = ready_w.as_raw_fd();
        // SAFETY: setns, open/write (see `Join::enter`), fcntl and dup2 only. The
        // namespaces first (their fds may sit where ours go), then our fds above the
        // targets (a source may sit on one), then into place.
        unsafe {
            cmd.pre_exec(move || {
                join.enter()?;
                let ready = libc::fcntl(ready_fd, libc::F_DUPFD_CLOEXEC, base + 2);
                let console = match console_fd {
                    Some(fd) => libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, base + 2),
                    None => 0,
                };
                if ready < 0
                    || console < 0
                    || libc::dup2(ready, base + 1) < 0
                    || (console_fd.is_some() && libc::dup2(console, base) < 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                // Nothing else of ours or the caller's past the fds handed on.
                if console_fd.is_none() {
                    libc::close(base);
                }
                libc::syscall(libc::SYS_close_range, base + 2, u32::MAX, 0);
                Ok(())
            });
        }
        let mut child = in_pid_namespace_of(holder, || process::spawn(&mut cmd))?;
        drop((console, ready_w));
        // Returns once the process runs (as runc's exec), or with why it cannot.
        let mut why = String::new();
        let _ = std::io::Read::read_to_string(&mut fs::File::from(ready_r), &mut why);
        if let Some(reason) = why.strip_prefix("error: ") {
            let _ = child.wait();
            return Err(Error::Usage(reason.trim_end().to_string()));
        }
        if let Some(socket) = &a.pidfd_socket {
            super::protocol::send_pidfd(socket, child.id() as i32)?;
        }
        if a.detach {
            if let Some(pid_file) = &a.pid_file {
                write_pid_file(pid_file, child.id() as i32)?;
            }
            return Ok(0);
        }
        let status = child.wait().context(|| "wait for exec")?;
        Ok(exit_code(status))
    }

    /// runc's `ps`: the processes in the container's cgroup (`parent`: its parent's,
    /// for a manager that puts init in a child of the container's cgroup).
    pub fn ps(&self, a: &crate::cli::PsArgs, id: &str, parent: bool) -> Result<Exit> {
        // A created container has processes too (init, and ours waiting for start).
        let not_running = || Error::Usage("container not running".into());
        let pid = self.holder(id).ok_or_else(not_running)?;
        let pids = super::ps::cgroup_pids(pid, parent)?;
        if a.format == "json" {
            crate::output::emit(&format!(
                "{}\n",
                serde_json::to_string(&pids).unwrap_or_default()
            ))?;
            return Ok(0);
        }
        super::ps::print_ps_table(&pids, &a.ps_args)
    }
}

/// The console socket a new container's terminal goes to, connected (the holder
/// makes the pty inside, see `terminal`), or none; runc's refusals otherwise.
pub fn create_terminal(
    bundle: &Bundle,
    create: &CreateArgs,
    run: Option<&RunArgs>,
    backend: &str,
) -> Result<Option<UnixStream>> {
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let foreground = run.is_some_and(|r| !r.detach);
    match (terminal, &create.console_socket) {
        (true, Some(socket)) => Ok(Some(super::protocol::connect_long(socket)?)),
        (true, None) if !foreground => Err(Error::Usage(
            "cannot allocate tty if runc will detach without setting console socket".into(),
        )),
        (true, None) => Err(Error::Unsupported {
            command: "run with a terminal but no --console-socket".into(),
            backend: backend.to_string(),
        }),
        (false, Some(_)) => Err(Error::Usage(
            "cannot use console socket if runc will not detach or allocate tty".into(),
        )),
        (false, None) => Ok(None),
    }
}

/// What no supervised backend does: checkpoint and restore, refused by name.
pub fn refuse_checkpoint(command: &Command, backend: &str) -> Result<()> {
    match command {
        Command::Checkpoint(_) | Command::Restore(_) => Err(Error::Unsupported {
            command: command.name().to_string(),
            backend: backend.to_string(),
        }),
        _ => Ok(()),
    }
}

/// `create`'s and `run`'s flags, or None for any other command.
pub fn create_args(command: &Command) -> Option<(&CreateArgs, Option<&RunArgs>)> {
    match command {
        Command::Create(a) => Some((a, None)),
        Command::Run(r) => Some((&r.create, Some(r))),
        _ => None,
    }
}

/// Noted at create for `--no-new-keyring`, which `exec` follows too.
const NO_NEW_KEYRING: &str = "no-new-keyring";

/// runc's session keyring for the processes of the container whose runtime dir is
/// `dir`, `_ses.<id>`; none after `create --no-new-keyring` (noted in `dir`).
pub fn session_keyring(dir: &Path) -> Option<String> {
    let id = dir.file_name()?.to_string_lossy();
    (!dir.join(NO_NEW_KEYRING).exists()).then(|| format!("_ses.{id}"))
}

/// The LXC-style managers always pivot_root into the rootfs: `--no-pivot` (for a
/// rootfs on ramfs, where pivot_root fails) cannot be honoured, and is refused.
pub fn refuse_unsupported_flags(create: &CreateArgs, backend: &str) -> Result<()> {
    if create.no_pivot {
        return Err(Error::Unsupported {
            command: "--no-pivot".into(),
            backend: backend.to_string(),
        });
    }
    Ok(())
}

/// Notes a pid with its start time, so that a reused pid is never taken for it.
pub fn write_pid_note(path: &Path, pid: i32) -> Result<()> {
    let start = start_time(pid).unwrap_or_default();
    fs::write(path, format!("{pid} {start}")).context(|| format!("write {}", path.display()))
}

/// A pid noted with `write_pid_note`, if that process still runs.
pub fn read_pid_note(path: &Path) -> Option<i32> {
    let text = fs::read_to_string(path).ok()?;
    let (pid, start) = text.trim().split_once(' ')?;
    let pid: i32 = pid.parse().ok()?;
    (start_time(pid)?.as_str() == start).then_some(pid)
}

/// Fields 3 on of /proc/PID/stat (after the command name, which may hold anything).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// Field 4 of /proc/PID/stat.
fn parent_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Field 22 of /proc/PID/stat, to tell a pid from a reused one.
fn start_time(pid: i32) -> Option<String> {
    let mut fields = stat_fields(pid)?;
    // A zombie has exited: the container's pid is gone for our purposes.
    if fields.first().map(String::as_str) == Some("Z") {
        return None;
    }
    (fields.len() > 19).then(|| fields.swap_remove(19))
}

/// runc's pid file: decimal, no newline, written under a temporary name and renamed.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}"));
    // O_EXCL, as runc: never through something planted under the temporary name.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .context(|| format!("create {}", temp.display()))?;
    f.write_all(pid.to_string().as_bytes())
        .context(|| format!("write {}", temp.display()))?;
    fs::rename(&temp, path).context(|| format!("rename {}", path.display()))
}

/// Writes a new file with `mode` (never through an existing file or link).
pub fn write_new(path: &Path, body: &[u8], mode: u32) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(body))
        .context(|| format!("write {}", path.display()))
}

/// The holder's word on its pipe: Ok once it is in the container, else why not.
fn wait_ready(ready: fs::File) -> std::result::Result<(), String> {
    use std::io::BufRead;
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&ready),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = nix::poll::PollTimeout::try_from(READY_TIMEOUT.as_millis() as i32)
        .unwrap_or(nix::poll::PollTimeout::MAX);
    match nix::poll::poll(&mut fds, ms) {
        Ok(0) => return Err("the holder did not join the container in time".into()),
        Err(e) => return Err(format!("wait for the holder: {e}")),
        Ok(_) => {}
    }
    let mut line = String::new();
    let _ = std::io::BufReader::new(ready).read_line(&mut line);
    match line.trim_end() {
        "ready" => Ok(()),
        l if l.starts_with("error: ") => Err(l.trim_start_matches("error: ").to_string()),
        _ => Err("the holder exited before it joined the container".into()),
    }
}

/// The holder, our child by fork (so not a `std::process::Child`).
struct HolderChild(i32);

impl HolderChild {
    fn id(&self) -> i32 {
        self.0
    }

    fn kill(&self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }

    fn wait(&self) -> Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child.
            if unsafe { libc::waitpid(self.0, &mut status, 0) } == self.0 {
                return Ok(std::process::ExitStatus::from_raw(status));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::io("wait for the container", e));
            }
        }
    }
}

/// The `Threads:` of /proc/self/status.
fn threads() -> Option<usize> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line["Threads:".len()..].trim().parse().ok()
}

/// The forked child: the fds moved into place (first out of the way, as a source may
/// sit on a target), signals as a fresh nexcage has them (SIGPIPE ignored, none
/// caught or blocked), then the holder; it never returns to the creator's code.
fn become_holder(args: &super::holder::Args, fds: [i32; 4]) -> ! {
    let base = args.fd_base;
    // SAFETY: fd, signal and prctl calls on ourselves; _exit ends us without running
    // the creator's exit handlers or flushing its buffers a second time.
    unsafe {
        let mut high = [0; 4];
        for (i, fd) in fds.iter().enumerate() {
            high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, base + 4);
            if high[i] < 0 {
                libc::_exit(255);
            }
        }
        for (i, fd) in high.iter().enumerate() {
            if libc::dup2(*fd, base + i as i32) < 0 {
                libc::_exit(255);
            }
        }
        // Below `base` are the caller's fds for the workload (inheritable); one of ours
        // in a gap between them (close-on-exec, the record's lock perhaps) goes, as an
        // exec would have closed it. The holder closes everything above its own four.
        for fd in 3..base {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC != 0 {
                libc::close(fd);
            }
        }
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let none: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_NAME, c"nexcage-holder".as_ptr());
        let code = match std::panic::catch_unwind(|| super::holder::run(args)) {
            Ok(Ok(code)) => code,
            Ok(Err(e)) => {
                log::error!("holder: {e}");
                eprintln!("nexcage: {e}");
                1
            }
            Err(_) => 1,
        };
        libc::_exit(code)
    }
}

/// Runs `f` (which makes a process) so that the process is born in `pid`'s pid
/// namespace; ours is restored after.
fn in_pid_namespace_of<T>(pid: i32, f: impl FnOnce() -> Result<T>) -> Result<T> {
    use nix::sched::{CloneFlags, setns};
    use std::os::unix::fs::MetadataExt;
    let path = format!("/proc/{pid}/ns/pid");
    let theirs = fs::File::open(&path).context(|| format!("open {path}"))?;
    let ours = fs::File::open("/proc/self/ns/pid").context(|| "open /proc/self/ns/pid")?;
    let (a, b) = (
        theirs.metadata().context(|| format!("stat {path}"))?,
        ours.metadata().context(|| "stat /proc/self/ns/pid")?,
    );
    if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
        return f();
    }
    setns(&theirs, CloneFlags::CLONE_NEWPID).context(|| format!("join {path}"))?;
    let made = f();
    setns(&ours, CloneFlags::CLONE_NEWPID).context(|| "return to our pid namespace")?;
    made
}

/// Why a start failed, from `start.log`: the first error of a liblxc log
/// (`... ERROR  conf - src/conf.c:fn:N - what`) is the cause, later ones only say that
/// the start failed; else the last lines.
fn start_log_reason(dir: &Path) -> String {
    let log = fs::read_to_string(dir.join(START_LOG)).unwrap_or_default();
    if let Some(line) = log.lines().find(|l| l.contains(" ERROR ")) {
        let after = line.split_once(" ERROR ").map_or(line, |(_, a)| a);
        let mut parts = after.splitn(3, " - ");
        if let (Some(_), Some(_), Some(what)) = (parts.next(), parts.next(), parts.next()) {
            return what.trim().to_string();
        }
        return after.trim().to_string();
    }
    let tail: Vec<&str> = log.lines().rev().take(3).collect();
    let text = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
    if text.is_empty() {
        "no output".into()
    } else {
        text
    }
}
