//! The host side of the holder + init mechanism, shared by the backends that use it:
//! the per-container runtime directory, the holder process, and how `start`, `state`,
//! `kill`, `exec` and `delete` reach the container through them.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use super::{BINARY, HOLDER_PID, INIT_PID, PROCESS, SETUP, SOCKET, STARTED};
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
}

/// Runtime directories, one per container, under `base`; each is bind-mounted
/// read-only into its container at the backend's mount point.
pub struct Supervisor {
    pub backend: String,
    pub base: PathBuf,
}

impl Supervisor {
    pub fn dir(&self, id: &str) -> PathBuf {
        self.base.join(id)
    }

    /// Makes the runtime directory: nexcage's static binary (init in any rootfs), the
    /// process and the setup for init. `mapped_root`: the container's root is a
    /// mapped uid that must be able to reach the directory.
    pub fn prepare(
        &self,
        record: &Record,
        bundle: &Bundle,
        setup: &Setup,
        mapped_root: bool,
    ) -> Result<PathBuf> {
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
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .context(|| format!("create {}", dir.display()))?;
        let exe = fs::read_link("/proc/self/exe").context(|| "find own binary")?;
        fs::copy(&exe, dir.join(BINARY)).context(|| "copy nexcage into the runtime dir")?;
        let process = bundle
            .spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::Bundle {
                path: record.bundle.clone(),
                reason: "config.json has no \"process\"".into(),
            })?;
        let body = serde_json::to_vec(process).map_err(|e| Error::Usage(e.to_string()))?;
        fs::write(dir.join(PROCESS), body).context(|| "write process.json")?;
        let body = serde_json::to_vec(setup).map_err(|e| Error::Usage(e.to_string()))?;
        fs::write(dir.join(SETUP), body).context(|| "write setup.json")?;
        Ok(dir)
    }

    /// Starts the holder, which will run `start_cmd` on `start`, with the container's
    /// stdio (ours, or `stdio`) and the listening socket as fd 3. Returns its pid.
    fn spawn_holder(
        &self,
        dir: &Path,
        start_cmd: &[OsString],
        stdio: Option<OwnedFd>,
    ) -> Result<i32> {
        let socket = dir.join(SOCKET);
        let listener =
            UnixListener::bind(&socket).context(|| format!("bind {}", socket.display()))?;
        // init connects as the container's root, which may be an unprivileged uid.
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o777))
            .context(|| "chmod holder socket")?;
        let mut cmd = std::process::Command::new(dir.join(BINARY));
        cmd.arg("holder")
            .arg("--dir")
            .arg(dir)
            .arg("--")
            .args(start_cmd);
        if let Some(tty) = stdio {
            cmd.stdin(Stdio::from(tty.try_clone().context(|| "dup tty")?))
                .stdout(Stdio::from(tty.try_clone().context(|| "dup tty")?))
                .stderr(Stdio::from(tty));
        }
        let fd = listener.as_raw_fd();
        // SAFETY: dup2/fcntl are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if fd == super::holder::LISTENER_FD {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, super::holder::LISTENER_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = process::spawn(&mut cmd)?;
        let pid = child.id() as i32;
        write_pid_note(&dir.join(HOLDER_PID), pid)?;
        Ok(pid)
    }

    /// The rest of `create`/`run` once the container is defined: the holder (whose
    /// pid goes to `--pid-file`) and, for `run`, the start. Returns the workload's
    /// exit status for a foreground `run`, None when the container stays.
    pub fn launch(
        &self,
        id: &str,
        start_cmd: &[OsString],
        tty: Option<OwnedFd>,
        create: &CreateArgs,
        run: Option<&RunArgs>,
    ) -> Result<Option<i32>> {
        let holder = self.spawn_holder(&self.dir(id), start_cmd, tty)?;
        if let Some(pid_file) = &create.pid_file {
            write_pid_file(pid_file, holder)?;
        }
        let Some(run) = run else { return Ok(None) };
        self.start(id)?;
        if run.detach {
            return Ok(None);
        }
        wait_holder(holder).map(Some)
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

    pub fn started(&self, id: &str) -> bool {
        self.dir(id).join(STARTED).exists()
    }

    /// `start`: the holder starts the container and hands init its stdio.
    pub fn start(&self, id: &str) -> Result<()> {
        if self.started(id) {
            return Err(Error::Usage(
                "cannot start an already running container".into(),
            ));
        }
        let mut conn = UnixStream::connect(self.dir(id).join(SOCKET))
            .map_err(|_| Error::Usage("cannot start a container that has stopped".into()))?;
        super::protocol::send_line(&mut conn, "start")?;
        match super::protocol::read_line(&conn)? {
            Some(line) if line == "ok" => Ok(()),
            Some(line) => Err(Error::Backend {
                backend: self.backend.clone(),
                reason: line.strip_prefix("error: ").unwrap_or(&line).to_string(),
            }),
            None => Err(Error::Usage(
                "cannot start a container that has stopped".into(),
            )),
        }
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

    /// runc's `kill`: before start the holder, after it init (which passes the signal
    /// on to the workload; SIGKILL ends the container).
    pub fn kill(&self, id: &str, signal: i32) -> Result<Exit> {
        let not_running = || Error::Usage("container not running".into());
        let holder = self.holder(id).ok_or_else(not_running)?;
        let target = if self.started(id) {
            self.init_pid(id).ok_or_else(not_running)?
        } else {
            holder
        };
        // SAFETY: kill(2) with a pid we checked and a validated signal number.
        if unsafe { libc::kill(target, signal) } < 0 {
            return Err(Error::io("kill", std::io::Error::last_os_error()));
        }
        Ok(0)
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
        if let Ok(mut conn) = UnixStream::connect(self.dir(id).join(SOCKET)) {
            let _ = super::protocol::send_line(&mut conn, "stop");
        }
    }

    pub fn remove_dir(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// runc's `exec` through `enter`: the command `prefix` runs its trailing argv in
    /// the container (`pct exec VMID --`, `lxc-attach ... --`); `mount_point` is where
    /// the runtime directory appears inside.
    pub fn exec(
        &self,
        a: &ExecArgs,
        id: &str,
        mount_point: &str,
        prefix: std::process::Command,
    ) -> Result<Exit> {
        if !self.running(id) {
            return Err(Error::Usage("cannot exec in a stopped container".into()));
        }
        let dir = self.dir(id);
        let (mut args, terminal) = super::exec::enter_args(a, &dir, mount_point)?;
        let tty = match (terminal, &a.console_socket) {
            (true, Some(socket)) => Some(console(socket)?),
            (true, None) if a.detach => {
                return Err(Error::Usage(
                    "cannot allocate tty if runc will detach without setting console socket".into(),
                ));
            }
            (false, Some(_)) => {
                return Err(Error::Usage(
                    "cannot use console socket if runc will not detach or allocate tty".into(),
                ));
            }
            _ => None,
        };
        // A terminal reaches the process by SCM_RIGHTS, as init's stdio does, not
        // through the attach tool's own pty relay.
        let stdio = if terminal {
            let name = format!("exec-{}.sock", std::process::id());
            let listener = UnixListener::bind(dir.join(&name))
                .context(|| format!("bind {}", dir.join(&name).display()))?;
            fs::set_permissions(dir.join(&name), fs::Permissions::from_mode(0o777))
                .context(|| "chmod exec socket")?;
            args.splice(
                2..2,
                [
                    "--stdio-socket".into(),
                    format!("{mount_point}/{name}").into(),
                ],
            );
            Some((listener, dir.join(name)))
        } else {
            None
        };
        let mut cmd = prefix;
        cmd.args(args);
        if stdio.is_some() {
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
        }
        if !a.detach && stdio.is_none() {
            return Err(process::exec(cmd));
        }
        let mut child = process::spawn(&mut cmd)?;
        if let Some((listener, path)) = stdio {
            let handed = super::exec::hand_stdio(&listener, tty);
            let _ = fs::remove_file(&path);
            if let Err(e) = handed {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        if a.detach {
            // The attach tool's pid, not the process's: it is our child, so the
            // engine (conmon, the shim) can reap it and get the process's status.
            if let Some(pid_file) = &a.pid_file {
                write_pid_file(pid_file, child.id() as i32)?;
            }
            return Ok(0);
        }
        let status = child.wait().context(|| "wait for exec")?;
        Ok(exit_code(status))
    }

    /// runc's `ps`: the processes in init's cgroup (`parent`: in its parent's, for
    /// a manager that puts init in a child of the container's cgroup).
    pub fn ps(&self, a: &crate::cli::PsArgs, id: &str, parent: bool) -> Result<Exit> {
        let not_running = || Error::Usage("container not running".into());
        if !self.running(id) {
            return Err(not_running());
        }
        let init = self.init_pid(id).ok_or_else(not_running)?;
        let pids = super::ps::cgroup_pids(init, parent)?;
        if a.format == "json" {
            println!("{}", serde_json::to_string(&pids).unwrap_or_default());
            return Ok(0);
        }
        super::ps::print_ps_table(&pids, &a.ps_args)
    }
}

/// The terminal a new container gets: a pty slave whose master went to the console
/// socket, or none; runc's refusals otherwise.
pub fn create_terminal(
    bundle: &Bundle,
    create: &CreateArgs,
    run: Option<&RunArgs>,
    backend: &str,
) -> Result<Option<OwnedFd>> {
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let foreground = run.is_some_and(|r| !r.detach);
    match (terminal, &create.console_socket) {
        (true, Some(socket)) => Ok(Some(console(socket)?)),
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

/// `create`'s and `run`'s flags, or None for any other command.
pub fn create_args(command: &Command) -> Option<(&CreateArgs, Option<&RunArgs>)> {
    match command {
        Command::Create(a) => Some((a, None)),
        Command::Run(r) => Some((&r.create, Some(r))),
        _ => None,
    }
}

/// A foreground `run`: waits for the holder (our child), whose status is the
/// workload's.
fn wait_holder(holder: i32) -> Result<i32> {
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(holder), None)
        .context(|| "wait for the holder")?;
    Ok(match status {
        nix::sys::wait::WaitStatus::Exited(_, code) => code,
        nix::sys::wait::WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 255,
    })
}

/// Notes a pid with its start time, so that a reused pid is never taken for it.
pub fn write_pid_note(path: &Path, pid: i32) -> Result<()> {
    let start = start_time(pid).unwrap_or_default();
    fs::write(path, format!("{pid} {start}")).context(|| format!("write {}", path.display()))
}

fn read_pid_note(path: &Path) -> Option<i32> {
    let text = fs::read_to_string(path).ok()?;
    let (pid, start) = text.trim().split_once(' ')?;
    let pid: i32 = pid.parse().ok()?;
    (start_time(pid)?.as_str() == start).then_some(pid)
}

/// Field 22 of /proc/PID/stat, to tell a pid from a reused one.
fn start_time(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // A zombie has exited: the container's pid is gone for our purposes.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19).map(|s| s.to_string())
}

/// runc's pid file: decimal, no newline, written under a temporary name and renamed.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}"));
    let mut f = fs::File::create(&temp).context(|| format!("create {}", temp.display()))?;
    f.write_all(pid.to_string().as_bytes())
        .context(|| format!("write {}", temp.display()))?;
    fs::rename(&temp, path).context(|| format!("rename {}", path.display()))
}

/// Opens a pty, hands its master to the console socket as runc does (one SCM_RIGHTS
/// message), and returns the slave for the container.
pub fn console(socket: &Path) -> Result<OwnedFd> {
    let pty = nix::pty::openpty(None, None).context(|| "open a pty")?;
    let conn = UnixStream::connect(socket)
        .context(|| format!("connect to console socket {}", socket.display()))?;
    super::protocol::send_fds(&conn, &[pty.master.as_raw_fd()])?;
    Ok(pty.slave)
}
