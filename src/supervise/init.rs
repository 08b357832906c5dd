//! Code that runs inside the container: `nexcage init` (PID 1) and `nexcage enter`
//! (the target of the backend's attach tool, which sets up identity, cwd and env,
//! then execs).

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
use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};

use super::host::Setup;
use super::protocol::{recv_fds, send_line};
use super::{PROCESS, SETUP, SOCKET};
use crate::error::{Error, IoContext, Result};

/// Who the process runs as, and how: what `init` reads from process.json and what
/// `enter` gets on its command line.
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub rlimits: Vec<(libc::c_int, u64, u64)>,
    pub no_new_privileges: bool,
    /// None: keep what the process has (the backend's own bounds apply).
    pub caps: Option<CapSets>,
}

/// Capability sets as bitmasks, so that they can be applied between fork and exec.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

/// PID 1: set up what needs privileges, fetch stdio from the holder, run the
/// workload, report how it ended. `dir` is the runtime directory as mounted inside.
pub fn init(dir: &Path) -> Result<i32> {
    let prepared = prepare_init(dir);
    let (mut cmd, args) = match prepared {
        Ok(ready) => ready,
        Err(e) => {
            // The holder relays this to `start` rather than waiting for us.
            let mut conn = UnixStream::connect(dir.join(SOCKET))
                .context(|| format!("connect to {}", dir.join(SOCKET).display()))?;
            send_line(&mut conn, &format!("error: {e}"))?;
            return Ok(255);
        }
    };
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

fn prepare_init(dir: &Path) -> Result<(Command, Vec<String>)> {
    let text = std::fs::read(dir.join(PROCESS)).context(|| "read process.json")?;
    let process: Process =
        serde_json::from_slice(&text).map_err(|e| Error::Usage(format!("process.json: {e}")))?;
    let setup: Setup = match std::fs::read(dir.join(SETUP)) {
        Ok(text) => {
            serde_json::from_slice(&text).map_err(|e| Error::Usage(format!("setup.json: {e}")))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Setup::default(),
        Err(e) => return Err(Error::io("read setup.json", e)),
    };
    super::confine::apply(&setup)?;
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
        caps: process.capabilities().as_ref().map(CapSets::from_spec),
    };
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let cmd = command(&args, &env, process.cwd(), &identity)?;
    Ok((cmd, args))
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
    let (uid, gid, rlimits, nnp) = (id.uid, id.gid, id.rlimits.clone(), id.no_new_privileges);
    let gids: Vec<nix::unistd::Gid> = id
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    // What we hold now bounds what the workload can be given.
    let caps = id.caps.map(|c| c.within(held_permitted()));
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
            if let Some(c) = &caps {
                c.bound()?;
            }
            nix::unistd::setgroups(&gids).map_err(std::io::Error::from)?;
            let gid = nix::unistd::Gid::from_raw(gid);
            nix::unistd::setresgid(gid, gid, gid).map_err(std::io::Error::from)?;
            let uid = nix::unistd::Uid::from_raw(uid);
            nix::unistd::setresuid(uid, uid, uid).map_err(std::io::Error::from)?;
            if let Some(c) = &caps {
                c.grant()?;
            }
            if nnp && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// capset(2)'s version 3 header and data (two 32-bit halves of each set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

fn held_permitted() -> u64 {
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a v3 header and room for its two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc < 0 {
        return 0;
    }
    u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32)
}

impl CapSets {
    pub fn from_spec(c: &LinuxCapabilities) -> CapSets {
        let mask = |set: &Option<oci_spec::runtime::Capabilities>| -> u64 {
            set.iter()
                .flatten()
                .filter_map(|cap| {
                    let name = serde_json::to_value(cap).ok()?;
                    name.as_str()?.parse::<caps::Capability>().ok()
                })
                .fold(0, |m, cap| m | cap.bitmask())
        };
        CapSets {
            bounding: mask(c.bounding()),
            effective: mask(c.effective()),
            permitted: mask(c.permitted()),
            inheritable: mask(c.inheritable()),
            ambient: mask(c.ambient()),
        }
    }

    /// `enter --caps`: the five masks in hex, colon-separated (see [`CapSets::arg`]).
    pub fn parse(text: &str) -> Option<CapSets> {
        let masks: Vec<u64> = text
            .split(':')
            .map(|m| u64::from_str_radix(m, 16).ok())
            .collect::<Option<_>>()?;
        let [bounding, effective, permitted, inheritable, ambient] = masks[..] else {
            return None;
        };
        Some(CapSets {
            bounding,
            effective,
            permitted,
            inheritable,
            ambient,
        })
    }

    pub fn arg(&self) -> String {
        format!(
            "{:x}:{:x}:{:x}:{:x}:{:x}",
            self.bounding, self.effective, self.permitted, self.inheritable, self.ambient
        )
    }

    /// Limited to what can be granted from `held`: effective within permitted,
    /// ambient within permitted and inheritable, as the kernel requires.
    fn within(self, held: u64) -> CapSets {
        let permitted = self.permitted & held;
        let inheritable = self.inheritable & permitted;
        CapSets {
            bounding: self.bounding,
            effective: self.effective & permitted,
            permitted,
            inheritable,
            ambient: self.ambient & inheritable,
        }
    }

    /// Before the identity change: shrink the bounding set, and keep the permitted
    /// set across setuid.
    fn bound(&self) -> std::io::Result<()> {
        for cap in 0..64u64 {
            // SAFETY: prctl on our own capability bounding set.
            let has = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) };
            if has == 1
                && self.bounding & (1 << cap) == 0
                && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// After it: exactly the spec's sets.
    fn grant(&self) -> std::io::Result<()> {
        let mut header = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        let half = |m: u64, hi: bool| if hi { (m >> 32) as u32 } else { m as u32 };
        let data: [CapData; 2] = [false, true].map(|hi| CapData {
            effective: half(self.effective, hi),
            permitted: half(self.permitted, hi),
            inheritable: half(self.inheritable, hi),
        });
        // SAFETY: capset with a v3 header and its two data structs.
        if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for cap in 0..64u64 {
            if self.ambient & (1 << cap) != 0 {
                // SAFETY: prctl on our own ambient set.
                let rc = unsafe {
                    libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0)
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
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
