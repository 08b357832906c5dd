//! The holder: the container's process, the pid engines are given. `create` forks it
//! inside the container's pid namespace once the backend's init has set the container
//! up (a fork, not an exec of nexcage: that would cost a whole program start); it
//! moves into the container's cgroups and other namespaces, waits for `start`, and
//! then becomes the workload by exec, as runc's init does. Its stdio is the
//! container's (the caller's fds or a pty slave), so nothing is relayed.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::runtime::Process;

use super::hooks::{Hooks, Kind};
use super::identity::{self, Identity};
use super::join::{self, Namespaces};
use super::protocol::{read_line, send_line};
use super::seccomp::Program;
use super::{INSIDE, PROCESS, SECCOMP_BPF, STARTED};
use crate::error::{Error, IoContext, Result};

/// Exit status when the container was stopped before it started.
const KILLED: i32 = 128 + 9;
/// How long a caller on the holder socket may take to say what it wants.
const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What `create` tells the holder it forks.
#[derive(Debug)]
pub struct Args {
    /// The container's runtime directory.
    pub dir: PathBuf,
    /// Host pid of the container's init, whose namespaces and cgroups are joined.
    pub init_pid: i32,
    /// First of the four fds passed: listening socket, init's connection, ready pipe,
    /// console socket.
    pub fd_base: i32,
    /// The fourth fd is the engine's console socket.
    pub console: bool,
    /// A network namespace to join instead of init's (the engine's, for a manager
    /// that cannot be told to use it).
    pub netns: Option<PathBuf>,
    /// A new session keyring of this name for the workload (runc's `_ses.<id>`);
    /// none with `--no-new-keyring`.
    pub session_keyring: Option<String>,
}

/// Runs the holder; `base` is the first of the four fds `create` passed: the
/// listening socket, the connection init made, the pipe to report readiness on, and
/// the engine's console socket (`console`; else a placeholder).
pub fn run(args: &Args) -> Result<i32> {
    let base = args.fd_base;
    // SAFETY: `create` passed us these fds (see `host::Supervisor::spawn_holder`).
    let (listener, mut init, mut ready, last) = unsafe {
        (
            UnixListener::from_raw_fd(base),
            UnixStream::from_raw_fd(base + 1),
            File::from_raw_fd(base + 2),
            OwnedFd::from_raw_fd(base + 3),
        )
    };
    for fd in base..base + 4 {
        // SAFETY: fcntl on our own fds.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let console = args.console.then(|| UnixStream::from(last));
    // Whatever the caller left open past the fds it hands on (--preserve-fds) must
    // not reach the workload. SAFETY: close_range on fds nobody here uses.
    unsafe { libc::syscall(libc::SYS_close_range, base + 4, u32::MAX, 0) };
    // Until exec, the container's processes must not ptrace or read us.
    // SAFETY: prctl on ourselves.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };

    let workload = match Workload::prepare(args, &mut init, console) {
        Ok(w) => w,
        Err(e) => {
            let _ = writeln!(ready, "error: {e}");
            return Ok(255);
        }
    };
    writeln!(ready, "ready").context(|| "report ready")?;
    drop(ready);

    // Only the host's root can reach the socket; still, a caller that says nothing
    // or something else is dropped, never waited on or obeyed.
    let mut starter = loop {
        let Ok((conn, _)) = listener.accept() else {
            continue;
        };
        let _ = conn.set_read_timeout(Some(PEER_TIMEOUT));
        match read_line(&conn).ok().flatten().as_deref() {
            Some("start") => break conn,
            Some("stop") => return Ok(KILLED),
            _ => {}
        }
    };
    let _ = starter.set_read_timeout(None);
    let pid = std::process::id() as i32;
    let hooked = workload.hooks.as_ref().map_or(Ok(()), |h| {
        h.run(Kind::StartContainer, "created", pid, None)
    });
    if let Err(e) = hooked {
        let _ = send_line(&mut starter, &format!("error: {e}"));
        return Ok(255);
    }
    workload.mark_started()?;
    send_line(&mut starter, "ok")?;
    drop((starter, listener, init));
    Ok(workload.exec())
}

struct Workload {
    cmd: Command,
    /// The process's args[0], for messages.
    arg0: String,
    hooks: Option<Hooks>,
    /// The runtime directory, reachable after we left the host's mounts.
    dir: File,
}

impl Workload {
    /// Everything up to `start`: read what `create` wrote, join the container, and
    /// check what runc checks before it reports the container created.
    fn prepare(
        args: &Args,
        init: &mut UnixStream,
        console: Option<UnixStream>,
    ) -> Result<Workload> {
        let (dir, init_pid) = (args.dir.as_path(), args.init_pid);
        let text = std::fs::read(dir.join(PROCESS)).context(|| "read process.json")?;
        let process: Process = serde_json::from_slice(&text)
            .map_err(|e| Error::Usage(format!("process.json: {e}")))?;
        let seccomp = match std::fs::read(dir.join(INSIDE).join(SECCOMP_BPF)) {
            Ok(bytes) => Some(Program::from_bytes(&bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read the seccomp filter", e)),
        };
        let hooks = Hooks::load(dir)?;
        let dir_fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)
            .context(|| format!("open {}", dir.display()))?;
        if let Some(adj) = process.oom_score_adj() {
            std::fs::write("/proc/self/oom_score_adj", adj.to_string())
                .context(|| "set oom_score_adj")?;
        }

        // The engine's network namespace instead of init's, when `create` names one.
        let namespaces = match args.netns.as_deref() {
            None => Namespaces::of(init_pid, &[])?,
            Some(path) => Namespaces::of(init_pid, &["net"])?.with_first(path, "net")?,
        };
        join::cgroups(init_pid)?;
        namespaces.enter()?;
        // Inside the user namespace, so that the keyring is the container root's.
        if let Some(name) = &args.session_keyring {
            identity::join_session_keyring(name)?;
        }
        // init watches us from now on: when we end, the container ends.
        send_line(init, &format!("workload {}", std::process::id()))?;
        if let Some(console) = console {
            super::terminal::attach(&console)?;
        }

        change_dir(process.cwd())?;
        let args = process.args().clone().unwrap_or_default();
        let env = process.env().clone().unwrap_or_default();
        let arg0 = args
            .first()
            .cloned()
            .ok_or_else(|| Error::Usage("args must not be empty".into()))?;
        let program = look_path(&arg0, &env)?;
        let terminal = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
        let mut cmd = Command::new(&program);
        // SAFETY: setsid and ioctl are async-signal-safe; a terminal that is no
        // session's needs no privilege to become ours.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut id = Identity::from_process(&process);
        id.seccomp = seccomp;
        identity::configure(&mut cmd, &args, &env, id)?;
        Ok(Workload {
            cmd,
            arg0,
            hooks,
            dir: dir_fd,
        })
    }

    fn mark_started(&self) -> Result<()> {
        let name = std::ffi::CString::new(STARTED).unwrap_or_default();
        // SAFETY: openat on our directory fd with a valid name.
        let fd = unsafe {
            libc::openat(
                std::os::fd::AsRawFd::as_raw_fd(&self.dir),
                name.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            return Err(Error::io("mark started", std::io::Error::last_os_error()));
        }
        // SAFETY: we own the fd just opened.
        unsafe { libc::close(fd) };
        Ok(())
    }

    /// Becomes the workload; returns only if that fails, with runc's status and words
    /// on the container's stderr.
    fn exec(mut self) -> i32 {
        // Orphans of the workload's descendants come back to it, as they would to a
        // PID 1 (it is not one: the backend's init is), and init systems such as
        // `docker run --init`'s tini see they can reap. Kept across exec.
        // SAFETY: prctl on ourselves.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let err = self.cmd.exec();
        let _ = writeln!(
            std::io::stderr(),
            "exec: {:?}: {}",
            self.arg0,
            io_words(&err)
        );
        match err.kind() {
            std::io::ErrorKind::NotFound => 127,
            _ => 126,
        }
    }
}

/// runc's chdir to the process's cwd, with its words when that fails.
pub fn change_dir(cwd: &Path) -> Result<()> {
    std::env::set_current_dir(cwd).map_err(|e| {
        Error::Usage(format!(
            "chdir to cwd ({:?}) set in config.json failed: {}",
            cwd.display(),
            io_words(&e)
        ))
    })
}

/// Go's exec.LookPath, which runc uses with the process's PATH: a name with a slash is
/// taken as is, any other is searched for; the errors are Go's.
pub fn look_path(name: &str, env: &[String]) -> Result<PathBuf> {
    let fail = |what: String| Error::Usage(format!("exec: {name:?}: {what}"));
    if name.contains('/') {
        return executable(Path::new(name)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                fail(format!("stat {name}: {}", io_words(&e)))
            } else {
                fail(io_words(&e))
            }
        });
    }
    let path = env
        .iter()
        .rev()
        .find_map(|v| v.strip_prefix("PATH="))
        .unwrap_or("");
    for dir in path.split(':').filter(|_| !path.is_empty()) {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(fail("executable file not found in $PATH".into()))
}

fn executable(path: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EACCES));
    }
    Ok(path.to_path_buf())
}

/// An I/O error as Go prints it: the bare strerror text, lower case.
fn io_words(e: &std::io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}
