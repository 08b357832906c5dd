//! Code that runs inside the container: `nexcage init` (PID 1) and `nexcage enter`
//! (the target of `pct exec`, which sets up identity, cwd and env, then execs).

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{PosixRlimitType, Process};

use super::protocol::{recv_fds, send_line};
use super::{MOUNT_POINT, PROCESS, SOCKET};
use crate::error::{Error, IoContext, Result};

/// Who the process runs as, and how: what `init` reads from process.json and what
/// `enter` gets on its command line.
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub rlimits: Vec<(libc::c_int, u64, u64)>,
    pub no_new_privileges: bool,
}

/// PID 1: fetch stdio from the holder, run the workload, report how it ended.
pub fn init() -> Result<i32> {
    let dir = Path::new(MOUNT_POINT);
    let text = std::fs::read(dir.join(PROCESS)).context(|| "read process.json")?;
    let process: Process =
        serde_json::from_slice(&text).map_err(|e| Error::Usage(format!("process.json: {e}")))?;
    let user = process.user();
    let identity = Identity {
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        rlimits: process
            .rlimits()
            .iter()
            .flatten()
            .map(|r| (rlimit_resource(r.typ()), r.soft(), r.hard()))
            .collect(),
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
    };
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let mut cmd = command(&args, &env, process.cwd(), &identity)?;
    let mut holder = stdio_from(&mut cmd, &dir.join(SOCKET), "init")?;
    let code = match cmd.spawn() {
        Ok(child) => wait_forwarding(child.id() as i32),
        // As runc: a workload that cannot start is exit 127 (not found) / 126.
        Err(e) => {
            let _ = send_line(&mut holder, &format!("error: {}: {e}", args.join(" ")));
            if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            }
        }
    };
    let _ = send_line(&mut holder, &format!("exit {code}"));
    Ok(code)
}

/// `enter`: become the exec'd process inside a running container. With `stdio_socket`, stdin/stdout/stderr (a terminal, say) come from whoever
/// listens there, as init's come from the holder.
pub fn enter(
    args: &[OsString],
    env: &[String],
    cwd: &str,
    identity: &Identity,
    stdio_socket: Option<&Path>,
) -> Error {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let prepared = command(&args, env, Path::new(cwd), identity).and_then(|mut cmd| {
        if let Some(socket) = stdio_socket {
            // The connection only carries the fds; it may close with us.
            stdio_from(&mut cmd, socket, "stdio")?;
        }
        Ok(cmd)
    });
    match prepared {
        Ok(cmd) => crate::process::exec(cmd),
        Err(e) => e,
    }
}

/// Connects to `socket`, says `hello`, and makes the 3 fds it is sent `cmd`'s stdio;
/// a terminal among them becomes the controlling terminal of a new session.
fn stdio_from(cmd: &mut Command, socket: &Path, hello: &str) -> Result<UnixStream> {
    let mut conn =
        UnixStream::connect(socket).context(|| format!("connect to {}", socket.display()))?;
    send_line(&mut conn, hello)?;
    let fds = recv_fds(&conn, 3)?;
    let [stdin, stdout, stderr]: [OwnedFd; 3] = fds
        .try_into()
        .map_err(|_| Error::Usage("expected 3 fds".into()))?;
    let tty = nix::unistd::isatty(&stdin).unwrap_or(false);
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    // SAFETY: only async-signal-safe calls. Hooks run in order, so this runs after
    // `command`'s identity change; neither setsid nor TIOCSCTTY on a terminal that is
    // no session's needs privilege.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(conn)
}

fn command(args: &[String], env: &[String], cwd: &Path, id: &Identity) -> Result<Command> {
    let (program, rest) = args
        .split_first()
        .ok_or_else(|| Error::Usage("the process has no args".into()))?;
    let mut cmd = Command::new(program);
    cmd.args(rest).env_clear().current_dir(cwd);
    for var in env {
        if let Some((k, v)) = var.split_once('=') {
            cmd.env(k, v);
        }
    }
    let (uid, gid, groups, rlimits, nnp) = (
        id.uid,
        id.gid,
        id.groups.clone(),
        id.rlimits.clone(),
        id.no_new_privileges,
    );
    // SAFETY: only async-signal-safe calls; identity last, as it drops privileges.
    unsafe {
        cmd.pre_exec(move || {
            for &(resource, soft, hard) in &rlimits {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(resource as _, &limit) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let gids: Vec<nix::unistd::Gid> = groups
                .iter()
                .map(|g| nix::unistd::Gid::from_raw(*g))
                .collect();
            nix::unistd::setgroups(&gids).map_err(std::io::Error::from)?;
            let gid = nix::unistd::Gid::from_raw(gid);
            nix::unistd::setresgid(gid, gid, gid).map_err(std::io::Error::from)?;
            let uid = nix::unistd::Uid::from_raw(uid);
            nix::unistd::setresuid(uid, uid, uid).map_err(std::io::Error::from)?;
            if nnp && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

fn rlimit_resource(typ: PosixRlimitType) -> libc::c_int {
    (match typ {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::c_int
}

static WORKLOAD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = WORKLOAD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// As PID 1: pass every signal on to the workload, reap every orphan, and return the
/// workload's status (128+N for signal N).
fn wait_forwarding(pid: i32) -> i32 {
    WORKLOAD.store(pid, Ordering::SeqCst);
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGCHLD) {
            continue;
        }
        let action = SigAction::new(
            SigHandler::Handler(forward),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: `forward` is async-signal-safe.
        let _ = unsafe { sigaction(sig, &action) };
    }
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

impl Identity {
    /// `uid[:gid]` as runc's `exec --user` takes it.
    pub fn parse_user(user: &str) -> Option<(u32, u32)> {
        match user.split_once(':') {
            Some((u, g)) => Some((u.parse().ok()?, g.parse().ok()?)),
            None => Some((user.parse().ok()?, 0)),
        }
    }
}
