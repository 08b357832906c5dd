//! Inside the container: `nexcage init`, the backend's init (PID 1 of the container's
//! pid namespace when it has one of its own), and `nexcage enter`, which becomes a
//! process `exec` asked for.
//!
//! init sets up what needs privileges (masked and read-only paths, the read-only root),
//! calls the runtime directory's socket so that `create` can place the holder in the
//! container, then drops its capabilities and waits: it reaps orphans, passes a stop
//! request (SIGTERM, or LXC's SIGPWR) on to the workload, and exits when the workload
//! has, which ends the container.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::host::Setup;
use super::identity::{self, Identity};
use super::protocol::{read_line, send_line};
use super::{INIT_SOCKET, SETUP};
use crate::error::{Error, IoContext, Result};

/// capability.h's number for CAP_KILL.
const CAP_KILL: u32 = 5;

/// The container's init. `dir` is the runtime directory as mounted inside.
pub fn init(dir: &Path) -> Result<i32> {
    let socket = dir.join(INIT_SOCKET);
    let mut conn =
        UnixStream::connect(&socket).context(|| format!("connect to {}", socket.display()))?;
    if let Err(e) = setup(dir) {
        // `create` reports this rather than waiting for us.
        send_line(&mut conn, &format!("error: {e}"))?;
        return Ok(255);
    }
    send_line(&mut conn, "init")?;
    // Nothing from here on needs privileges that a container process could borrow
    // from us; CAP_KILL passes a stop on to a workload of another uid.
    identity::drop_capabilities_but(1 << CAP_KILL).context(|| "drop init's capabilities")?;
    // SAFETY: prctl on ourselves.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    let Some(line) = read_line(&conn)? else {
        return Ok(0); // the holder is gone before it joined: so is the container
    };
    let pid: i32 = line
        .strip_prefix("workload ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::Usage(format!("unexpected message from the holder: {line:?}")))?;
    watch(pid)
}

fn setup(dir: &Path) -> Result<()> {
    let setup: Setup = match std::fs::read(dir.join(SETUP)) {
        Ok(text) => {
            serde_json::from_slice(&text).map_err(|e| Error::Usage(format!("setup.json: {e}")))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Setup::default(),
        Err(e) => return Err(Error::io("read setup.json", e)),
    };
    super::confine::apply(&setup)
}

/// Waits until `workload` (a pid in our pid namespace, not our child) has ended,
/// reaping whatever is orphaned to us meanwhile.
fn watch(workload: i32) -> Result<i32> {
    let mut signals = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGPWR,
    ] {
        signals.add(sig);
    }
    signals.thread_block().context(|| "block signals")?;
    let sfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC).context(|| "signalfd")?;
    // SAFETY: pidfd_open(2) returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, workload, 0) };
    if raw < 0 {
        return Ok(0); // gone already
    }
    // SAFETY: the fd was just returned to us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    loop {
        let mut fds = [
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::io("poll", e.into())),
        }
        if fds[0].any().unwrap_or(false) {
            return Ok(0);
        }
        while let Ok(Some(info)) = sfd.read_signal() {
            match info.ssi_signo as i32 {
                libc::SIGCHLD => reap(),
                libc::SIGPWR => forward(&pidfd, libc::SIGTERM),
                sig => forward(&pidfd, sig),
            }
        }
    }
}

fn reap() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

fn forward(pidfd: &OwnedFd, sig: i32) {
    // SAFETY: pidfd_send_signal(2) on the workload's pidfd.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// `enter`: become the exec'd process inside a running container. With
/// `console_fd`, the engine's console socket: a pty is made here, inside, its master
/// sent there, its slave our stdio and controlling terminal.
pub fn enter(
    args: &[OsString],
    env: &[String],
    cwd: &str,
    identity: Identity,
    console_fd: Option<i32>,
    ready_fd: Option<i32>,
) -> Error {
    // SAFETY: `exec` passed us this pipe's write end.
    let mut ready = ready_fd.map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
    if let Some(r) = &ready {
        // SAFETY: fcntl on our fd: it must close when the process is exec'd.
        unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let err = enter_process(args, env, cwd, identity, console_fd);
    if let Some(r) = &mut ready {
        let _ = std::io::Write::write_all(r, format!("error: {err}\n").as_bytes());
    }
    err
}

fn enter_process(
    args: &[OsString],
    env: &[String],
    cwd: &str,
    identity: Identity,
    console_fd: Option<i32>,
) -> Error {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(arg0) = args.first() else {
        return Error::Usage("args must not be empty".into());
    };
    if let Err(e) = super::holder::change_dir(Path::new(cwd)) {
        return e;
    }
    // runc's words for a process that cannot be found.
    let program = match super::holder::look_path(arg0, env) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut cmd = Command::new(program);
    let prepared = (|| {
        if let Some(fd) = console_fd {
            // SAFETY: `exec` passed us the connected console socket as this fd.
            let console = unsafe { UnixStream::from_raw_fd(fd) };
            super::terminal::attach(&console)?;
            drop(console);
            // SAFETY: only async-signal-safe calls, registered before the identity
            // change; a terminal that is no session's needs no privilege.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                    nix::unistd::setsid().map_err(std::io::Error::from)?;
                    if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        identity::configure(&mut cmd, &args, env, identity)
    })();
    match prepared {
        Ok(()) => crate::process::exec(cmd),
        Err(e) => e,
    }
}
