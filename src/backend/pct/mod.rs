//! Backend `pct`: the container is a real Proxmox VE LXC container, made, started and
//! destroyed with `pct` (and `pvesh` for a vmid), visible in Proxmox's UI. The engine
//! still gets a reapable pid, the container's stdio and its exit status through the
//! holder + init mechanism of `crate::supervise`. Nothing depends on Proxmox
//! internals: only `pct`, `pvesh` and their outputs.

mod exec;
mod ps;
mod template;
mod translate;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{Backend, Exit, Invocation, Observed, Status};
use crate::bundle::Bundle;
use crate::cli;
use crate::config::PctConfig;
use crate::error::{Error, IoContext, Result};
use crate::process::{self, exit_code};
use crate::state::Record;
use crate::supervise::{self, BINARY, HOLDER_PID, MOUNT_POINT, PROCESS, SOCKET, STARTED};

/// `pvesh get /cluster/nextid` does not reserve: another create may take the id first.
const CREATE_ATTEMPTS: usize = 5;
/// How long `delete` waits for a `pct create` left running by a killed nexcage.
const CREATE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

enum Ct {
    Gone,
    Ours,
    Creating,
    Other,
}

pub struct Pct {
    name: String,
    cfg: PctConfig,
    /// Runtime directories, one per container, bind-mounted into it.
    base: PathBuf,
}

impl Pct {
    pub fn new(name: &str, cfg: &PctConfig, base: PathBuf) -> Pct {
        Pct {
            name: name.to_string(),
            cfg: cfg.clone(),
            base,
        }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.base.join(id)
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::Unsupported {
            command: what.to_string(),
            backend: self.name.clone(),
        }
    }

    fn failed(&self, what: &str, out: &Output) -> Error {
        let text = String::from_utf8_lossy(&out.stderr);
        let text = if text.trim().is_empty() {
            String::from_utf8_lossy(&out.stdout)
        } else {
            text
        };
        Error::Backend {
            backend: self.name.clone(),
            reason: format!("{what} failed: {}", text.trim().replace('\n', " / ")),
        }
    }

    /// `pct ARGS`, output captured (pct prints task logs we must not pass on).
    fn pct(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.cfg.pct)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context(|| format!("run {}", self.cfg.pct.display()))
    }

    fn vmid(&self, id: &str) -> Option<String> {
        fs::read_to_string(self.dir(id).join("vmid"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// The holder's pid if it is still the process we started (pid reuse is checked
    /// with the start time recorded beside it).
    fn holder(&self, id: &str) -> Option<i32> {
        let text = fs::read_to_string(self.dir(id).join(HOLDER_PID)).ok()?;
        let (pid, start) = text.trim().split_once(' ')?;
        let pid: i32 = pid.parse().ok()?;
        (start_time(pid)?.as_str() == start).then_some(pid)
    }

    fn started(&self, id: &str) -> bool {
        self.dir(id).join(STARTED).exists()
    }

    /// Host pid of the container's init (nexcage init), from `pct status --verbose`.
    fn init_pid(&self, vmid: &str) -> Result<Option<i32>> {
        let out = self.pct(&["status", vmid, "--verbose"])?;
        if !out.status.success() {
            return Err(self.failed("pct status", &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("pid: "))
            .and_then(|p| p.trim().parse().ok()))
    }

    /// Whose Proxmox container `vmid` is: this OCI container's if its description says
    /// so; in creation if it holds only `lock: create` (the description comes with the
    /// rest of the config when `pct create` finishes).
    fn ct(&self, vmid: &str, id: &str) -> Result<Ct> {
        let out = self.pct(&["config", vmid])?;
        if !out.status.success() {
            if String::from_utf8_lossy(&out.stderr).contains("does not exist") {
                return Ok(Ct::Gone);
            }
            return Err(self.failed("pct config", &out));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let ours = text
            .lines()
            .filter_map(|l| l.strip_prefix("description: "))
            .any(|d| percent_decode(d).trim_end() == translate::description(id));
        Ok(if ours {
            Ct::Ours
        } else if text.lines().any(|l| l == "lock: create") {
            Ct::Creating
        } else {
            Ct::Other
        })
    }

    /// Destroys the Proxmox container of a record, waiting out a `pct create` still
    /// running for a killed nexcage.
    fn destroy_ct(&self, vmid: &str, id: &str) -> Result<()> {
        let deadline = std::time::Instant::now() + CREATE_WAIT;
        loop {
            match self.ct(vmid, id)? {
                Ct::Gone | Ct::Other => return Ok(()),
                Ct::Ours => break,
                Ct::Creating if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                // The create itself was killed; the vmid was noted before it started.
                Ct::Creating => {
                    let out = self.pct(&["unlock", vmid])?;
                    if !out.status.success() {
                        return Err(self.failed("pct unlock", &out));
                    }
                    let out = self.pct(&[
                        "destroy",
                        vmid,
                        "--purge",
                        "--destroy-unreferenced-disks",
                        "1",
                    ])?;
                    if !out.status.success() {
                        return Err(self.failed("pct destroy", &out));
                    }
                    return Ok(());
                }
            }
        }
        let status = self.pct(&["status", vmid])?;
        if String::from_utf8_lossy(&status.stdout).contains("status: running") {
            let out = self.pct(&["stop", vmid])?;
            if !out.status.success() {
                return Err(self.failed("pct stop", &out));
            }
        }
        let out = self.pct(&["destroy", vmid, "--purge"])?;
        if !out.status.success() {
            return Err(self.failed("pct destroy", &out));
        }
        Ok(())
    }

    fn prepare_dir(&self, record: &Record, bundle: &Bundle) -> Result<PathBuf> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.base)
            .context(|| format!("create {}", self.base.display()))?;
        if self.cfg.unprivileged {
            // The container's root is a mapped uid: it must reach the runtime dir.
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
        // The static binary runs as init in any rootfs.
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
        Ok(dir)
    }

    /// `pct create` with a fresh vmid, retrying when another create took it first.
    /// The vmid is noted in the runtime dir before `pct create` runs, so that a create
    /// killed half-way leaves something `delete --force` can find.
    fn create_ct(
        &self,
        dir: &Path,
        template: &str,
        options: &[String],
        fixed: Option<&str>,
    ) -> Result<String> {
        let mut last = None;
        for _ in 0..CREATE_ATTEMPTS {
            if let Some(vmid) = fixed {
                return self.create_with(dir, vmid, template, options);
            }
            let out = Command::new(&self.cfg.pvesh)
                .args(["get", "/cluster/nextid"])
                .stdin(Stdio::null())
                .output()
                .context(|| format!("run {}", self.cfg.pvesh.display()))?;
            if !out.status.success() {
                return Err(self.failed("pvesh get /cluster/nextid", &out));
            }
            let vmid = String::from_utf8_lossy(&out.stdout)
                .trim()
                .trim_matches('"')
                .to_string();
            if vmid.is_empty() || !vmid.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::Backend {
                    backend: self.name.clone(),
                    reason: format!("pvesh gave no vmid: {vmid:?}"),
                });
            }
            match self.create_with(dir, &vmid, template, options) {
                Err(Error::Backend { reason, .. }) if reason.contains("already exists") => {
                    last = Some(reason);
                }
                other => return other,
            }
        }
        Err(Error::Backend {
            backend: self.name.clone(),
            reason: format!(
                "pct create: vmid taken {CREATE_ATTEMPTS} times in a row: {}",
                last.unwrap_or_default()
            ),
        })
    }

    fn create_with(
        &self,
        dir: &Path,
        vmid: &str,
        template: &str,
        options: &[String],
    ) -> Result<String> {
        fs::write(dir.join("vmid"), vmid).context(|| "write vmid")?;
        let mut args: Vec<&str> = vec!["create", vmid, template];
        args.extend(options.iter().map(String::as_str));
        let out = self.pct(&args)?;
        if out.status.success() {
            return Ok(vmid.to_string());
        }
        // Taken by someone else, whose container must never be destroyed as ours. Any
        // other failure keeps the note: the cleanup then checks what pct left.
        if String::from_utf8_lossy(&out.stderr).contains("already exists") {
            let _ = fs::remove_file(dir.join("vmid"));
        }
        Err(self.failed("pct create", &out))
    }

    /// Starts the holder with the container's stdio and the listening socket as fd 3.
    fn spawn_holder(&self, dir: &Path, vmid: &str, stdio: Option<OwnedFd>) -> Result<i32> {
        let socket = dir.join(SOCKET);
        let listener =
            UnixListener::bind(&socket).context(|| format!("bind {}", socket.display()))?;
        // init connects as the container's root, which may be an unprivileged uid.
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o777))
            .context(|| "chmod holder socket")?;
        let exe = dir.join(BINARY);
        let mut cmd = Command::new(&exe);
        cmd.arg("holder")
            .arg("--dir")
            .arg(dir)
            .arg("--")
            .arg(&self.cfg.pct)
            .args(["start", vmid]);
        if let Some(tty) = stdio {
            cmd.stdin(Stdio::from(tty.try_clone().context(|| "dup tty")?))
                .stdout(Stdio::from(tty.try_clone().context(|| "dup tty")?))
                .stderr(Stdio::from(tty));
        }
        let fd = listener.as_raw_fd();
        // SAFETY: dup2/fcntl are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if fd == supervise::holder::LISTENER_FD {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, supervise::holder::LISTENER_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = process::spawn(&mut cmd)?;
        let pid = child.id() as i32;
        let start = start_time(pid).unwrap_or_default();
        fs::write(dir.join(HOLDER_PID), format!("{pid} {start}")).context(|| "write holder.pid")?;
        Ok(pid)
    }

    fn start_container(&self, id: &str) -> Result<()> {
        if self.started(id) {
            return Err(Error::Usage(
                "cannot start an already running container".into(),
            ));
        }
        let mut conn = UnixStream::connect(self.dir(id).join(SOCKET))
            .map_err(|_| Error::Usage("cannot start a container that has stopped".into()))?;
        supervise::protocol::send_line(&mut conn, "start")?;
        match supervise::protocol::read_line(&conn)? {
            Some(line) if line == "ok" => Ok(()),
            Some(line) => Err(Error::Backend {
                backend: self.name.clone(),
                reason: line.strip_prefix("error: ").unwrap_or(&line).to_string(),
            }),
            None => Err(Error::Usage(
                "cannot start a container that has stopped".into(),
            )),
        }
    }
}

impl Backend for Pct {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, inv: &Invocation) -> Result<()> {
        match inv.command {
            cli::Command::Pause(_)
            | cli::Command::Resume(_)
            | cli::Command::Events(_)
            | cli::Command::Update(_)
            | cli::Command::Checkpoint(_)
            | cli::Command::Restore(_) => Err(self.unsupported(inv.command.name())),
            _ => Ok(()),
        }
    }

    fn create(&self, inv: &Invocation, record: &Record) -> Result<Exit> {
        let (create, run) = match inv.command {
            cli::Command::Create(a) => (a, None),
            cli::Command::Run(r) => (&r.create, Some(r)),
            other => return Err(self.unsupported(other.name())),
        };
        let bundle = Bundle::load(&record.bundle)?;
        let terminal = bundle
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let foreground = run.is_some_and(|r| !r.detach);
        let tty = match (terminal, &create.console_socket) {
            (true, Some(socket)) => Some(console(socket)?),
            (true, None) if !foreground => {
                return Err(Error::Usage(
                    "cannot allocate tty if runc will detach without setting console socket".into(),
                ));
            }
            (true, None) => {
                return Err(self.unsupported("run with a terminal but no --console-socket"));
            }
            (false, Some(_)) => {
                return Err(Error::Usage(
                    "cannot use console socket if runc will not detach or allocate tty".into(),
                ));
            }
            (false, None) => None,
        };
        let settings = translate::settings(&bundle.spec, &self.cfg)?;
        let dir = self.prepare_dir(record, &bundle)?;
        let template = template::ensure(&self.cfg, &record.rootfs)?;
        let options =
            translate::create_options(&bundle.spec, &self.cfg, &settings, &record.id, &dir)?;
        let vmid = self.create_ct(&dir, &template, &options, settings.vmid.as_deref())?;
        let holder = self.spawn_holder(&dir, &vmid, tty)?;
        if let Some(pid_file) = &create.pid_file {
            write_pid_file(pid_file, holder)?;
        }
        let Some(run) = run else { return Ok(0) };
        self.start_container(&record.id)?;
        if run.detach {
            return Ok(0);
        }
        // Foreground: the holder is our child; its status is the workload's.
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(holder), None)
            .context(|| "wait for the holder")?;
        let code = match status {
            nix::sys::wait::WaitStatus::Exited(_, code) => code,
            nix::sys::wait::WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
            _ => 255,
        };
        if !run.keep {
            self.remove(inv, record)?;
        }
        Ok(code)
    }

    fn start(&self, _inv: &Invocation, record: &Record) -> Result<Exit> {
        self.start_container(&record.id).map(|()| 0)
    }

    fn holds(&self, record: &Record) -> bool {
        self.dir(&record.id).exists()
    }

    fn observe(&self, _inv: &Invocation, records: &[&Record]) -> Result<HashMap<String, Observed>> {
        let mut seen = HashMap::new();
        for record in records {
            if !self.holds(record) {
                continue;
            }
            let observed = match self.holder(&record.id) {
                Some(pid) if self.started(&record.id) => Observed {
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
            };
            seen.insert(record.id.clone(), observed);
        }
        Ok(seen)
    }

    fn kill(&self, _inv: &Invocation, record: &Record, signal: i32, _all: bool) -> Result<Exit> {
        let not_running = || Error::Usage("container not running".into());
        let holder = self.holder(&record.id).ok_or_else(not_running)?;
        let target = if self.started(&record.id) {
            let vmid = self.vmid(&record.id).ok_or_else(not_running)?;
            // init passes the signal on to the workload; SIGKILL ends the container.
            self.init_pid(&vmid)?.ok_or_else(not_running)?
        } else {
            holder
        };
        // SAFETY: kill(2) with a pid we looked up and a validated signal number.
        if unsafe { libc::kill(target, signal) } < 0 {
            return Err(Error::io("kill", std::io::Error::last_os_error()));
        }
        Ok(0)
    }

    fn delete(&self, inv: &Invocation, record: &Record, _force: bool) -> Result<Exit> {
        self.remove(inv, record).map(|()| 0)
    }

    /// Idempotent, from any state: holder gone, Proxmox container stopped and
    /// destroyed with its volumes, runtime directory removed.
    fn remove(&self, _inv: &Invocation, record: &Record) -> Result<()> {
        if let Some(pid) = self.holder(&record.id) {
            // SAFETY: kill(2) on the holder we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(vmid) = self.vmid(&record.id) {
            self.destroy_ct(&vmid, &record.id)?;
        }
        template::sweep(&self.cfg.template_dir);
        let dir = self.dir(&record.id);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }

    fn operate(&self, inv: &Invocation, record: &Record) -> Result<Exit> {
        let running = || self.started(&record.id) && self.holder(&record.id).is_some();
        match inv.command {
            cli::Command::Exec(a) => {
                if !running() {
                    return Err(Error::Usage("cannot exec in a stopped container".into()));
                }
                let vmid = self.vmid(&record.id).unwrap_or_default();
                let dir = self.dir(&record.id);
                let (mut args, terminal) = exec::enter_args(a, &dir)?;
                let tty = match (terminal, &a.console_socket) {
                    (true, Some(socket)) => Some(console(socket)?),
                    (true, None) if a.detach => {
                        return Err(Error::Usage(
                            "cannot allocate tty if runc will detach without setting console socket"
                                .into(),
                        ));
                    }
                    (false, Some(_)) => {
                        return Err(Error::Usage(
                            "cannot use console socket if runc will not detach or allocate tty"
                                .into(),
                        ));
                    }
                    _ => None,
                };
                // A terminal reaches the process by SCM_RIGHTS, as init's stdio does,
                // not through lxc-attach's own pty relay.
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
                            format!("{MOUNT_POINT}/{name}").into(),
                        ],
                    );
                    Some((listener, dir.join(name)))
                } else {
                    None
                };
                let mut cmd = Command::new(&self.cfg.pct);
                cmd.args(["exec", &vmid, "--keep-env", "0", "--"])
                    .args(args);
                if stdio.is_some() {
                    cmd.stdin(Stdio::null()).stdout(Stdio::null());
                }
                if !a.detach && stdio.is_none() {
                    return Err(process::exec(cmd));
                }
                let mut child = process::spawn(&mut cmd)?;
                if let Some((listener, path)) = stdio {
                    let handed = exec::hand_stdio(&listener, tty);
                    let _ = fs::remove_file(&path);
                    if let Err(e) = handed {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(e);
                    }
                }
                if a.detach {
                    if let Some(pid_file) = &a.pid_file {
                        write_pid_file(pid_file, child.id() as i32)?;
                    }
                    return Ok(0);
                }
                let status = child.wait().context(|| "wait for pct exec")?;
                Ok(exit_code(status))
            }
            cli::Command::Ps(a) => {
                if !running() {
                    return Err(Error::Usage("container not running".into()));
                }
                let vmid = self.vmid(&record.id).unwrap_or_default();
                let init = self
                    .init_pid(&vmid)?
                    .ok_or_else(|| Error::Usage("container not running".into()))?;
                let pids = ps::cgroup_pids(init)?;
                if a.format == "json" {
                    println!("{}", serde_json::to_string(&pids).unwrap_or_default());
                    return Ok(0);
                }
                ps::print_ps_table(&pids, &a.ps_args)
            }
            other => Err(self.unsupported(other.name())),
        }
    }
}

/// `pct config` prints the description %XX-encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}"));
    let mut f = fs::File::create(&temp).context(|| format!("create {}", temp.display()))?;
    f.write_all(pid.to_string().as_bytes())
        .context(|| format!("write {}", temp.display()))?;
    fs::rename(&temp, path).context(|| format!("rename {}", path.display()))
}

/// Opens a pty, hands its master to the console socket as runc does (one SCM_RIGHTS
/// message), and returns the slave for the container.
fn console(socket: &Path) -> Result<OwnedFd> {
    let pty = nix::pty::openpty(None, None).context(|| "open a pty")?;
    let conn = UnixStream::connect(socket)
        .context(|| format!("connect to console socket {}", socket.display()))?;
    supervise::protocol::send_fds(&conn, &[pty.master.as_raw_fd()])?;
    Ok(pty.slave)
}
