//! Who a container process runs as and under which restrictions, applied the way
//! runc's init applies them right before exec: rlimits, AppArmor, capabilities,
//! groups and ids, no_new_privs, and seccomp last (first when it needs privileges,
//! i.e. without no_new_privs). Used by the holder (the workload) and by `enter`.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};

use super::seccomp::Program;
use crate::error::{Error, Result};

/// Who the process runs as, and how: what the holder reads from process.json and
/// what `enter` gets on its command line.
#[derive(Default)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub rlimits: Vec<(libc::c_int, u64, u64)>,
    pub no_new_privileges: bool,
    /// None: keep what the process has (the backend's own bounds apply).
    pub caps: Option<CapSets>,
    pub seccomp: Option<Program>,
    pub apparmor: Option<String>,
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

impl Identity {
    /// The OCI process's identity (seccomp is the caller's to add).
    pub fn from_process(process: &Process) -> Identity {
        let user = process.user();
        Identity {
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
            seccomp: None,
            apparmor: process.apparmor_profile().clone().filter(|p| !p.is_empty()),
        }
    }

    /// `enter --rlimit RESOURCE:SOFT:HARD` (see `exec::enter_args`).
    pub fn parse_rlimit(text: &str) -> Option<(libc::c_int, u64, u64)> {
        let mut parts = text.split(':');
        let limit = (
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
        );
        parts.next().is_none().then_some(limit)
    }

    /// `uid[:gid]` as runc's `exec --user` takes it.
    pub fn parse_user(user: &str) -> Option<(u32, u32)> {
        match user.split_once(':') {
            Some((u, g)) => Some((u.parse().ok()?, g.parse().ok()?)),
            None => Some((user.parse().ok()?, 0)),
        }
    }
}

/// Makes `cmd` (whose program is already resolved) run with argv `args` and exactly
/// `env`, and take on `id` when it is exec'd (in a child, or in place with
/// `CommandExt::exec`). Capabilities the spec asks for but this process cannot grant
/// are an error, never silently left out.
pub fn configure(cmd: &mut Command, args: &[String], env: &[String], id: Identity) -> Result<()> {
    let (arg0, rest) = args
        .split_first()
        .ok_or_else(|| Error::Usage("args must not be empty".into()))?;
    cmd.arg0(arg0).args(rest).env_clear().envs(env_pairs(env));
    let caps = match id.caps {
        Some(c) => Some(c.grantable(held_permitted())?),
        None => None,
    };
    let apparmor = match &id.apparmor {
        // As runc: a profile asked for where AppArmor is off is an error, not nothing.
        Some(profile) if !apparmor_enabled() => {
            return Err(Error::Usage(format!(
                "apparmor profile {profile:?} set but AppArmor is not enabled on this host"
            )));
        }
        Some(profile) => Some(
            CString::new(format!("exec {profile}"))
                .map_err(|_| Error::Usage(format!("apparmor profile {profile:?}")))?,
        ),
        None => None,
    };
    let Identity {
        uid,
        gid,
        groups,
        rlimits,
        no_new_privileges: nnp,
        seccomp,
        ..
    } = id;
    let gids: Vec<libc::gid_t> = groups;
    // SAFETY: only async-signal-safe calls (no allocation); identity last but for
    // seccomp, as it drops privileges.
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
            if let Some(profile) = &apparmor {
                change_profile_on_exec(profile)?;
            }
            // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it
            // while it is still held (runc does the same).
            if !nnp && let Some(p) = &seccomp {
                p.load()?;
            }
            if let Some(c) = &caps {
                c.bound()?;
            }
            if libc::setgroups(gids.len(), gids.as_ptr()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setresgid(gid, gid, gid) < 0 || libc::setresuid(uid, uid, uid) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(c) = &caps {
                c.grant()?;
            }
            if nnp {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(p) = &seccomp {
                    p.load()?;
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// The process's `KEY=VALUE` list as pairs; an entry without `=` is no variable.
pub fn env_pairs(env: &[String]) -> impl Iterator<Item = (&str, &str)> {
    env.iter().filter_map(|var| var.split_once('='))
}

/// A new session keyring named `name`, as runc's init joins one: the workload must
/// not share the caller's (the host's) keys. A kernel without keyrings, or a filter
/// that denies keyctl the way LXC's and Proxmox's unprivileged profiles do (both
/// ENOSYS), is no error, as with runc.
pub fn join_session_keyring(name: &str) -> Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = std::ffi::CString::new(name)
        .map_err(|_| Error::Usage(format!("session keyring name {name:?}")))?;
    // SAFETY: keyctl(2) with a NUL-terminated name that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(Error::io("join a new session keyring", e));
        }
    }
    Ok(())
}

/// runc's apparmor.IsEnabled.
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.starts_with('Y'))
}

/// AppArmor's "change profile on exec", as runc's apparmor.ApplyProfile.
fn change_profile_on_exec(request: &CString) -> std::io::Result<()> {
    for path in [
        c"/proc/self/attr/apparmor/exec".as_ptr(),
        c"/proc/self/attr/exec".as_ptr(),
    ] {
        // SAFETY: open/write/close with valid C strings.
        unsafe {
            let fd = libc::open(path, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                continue;
            }
            let bytes = request.as_bytes();
            let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
            libc::close(fd);
            if n == bytes.len() as isize {
                return Ok(());
            }
            return Err(std::io::Error::last_os_error());
        }
    }
    Err(std::io::Error::other("AppArmor is not enabled"))
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

/// Drops every capability but those in `keep` from the effective, permitted and
/// inheritable sets: what init does once it has set the container up. The bounding
/// set stays: nothing can gain from it without the others, and tools that attach to
/// a container (`lxc-attach`, `pct enter`) bound what they attach by init's.
pub fn drop_capabilities_but(keep: u64) -> std::io::Result<()> {
    CapSets {
        bounding: !0,
        effective: keep,
        permitted: keep,
        inheritable: 0,
        ambient: 0,
    }
    .grant()
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

    /// The sets, if every capability in them can be granted from `held`; else the
    /// first one that cannot, by name (refuse, never drop).
    fn grantable(self, held: u64) -> Result<CapSets> {
        let missing = (self.permitted | self.effective | self.inheritable | self.ambient) & !held;
        if missing != 0 {
            let bit = missing.trailing_zeros();
            let name = caps::all()
                .into_iter()
                .find(|c| c.index() as u32 == bit)
                .map_or_else(|| format!("capability {bit}"), |c| c.to_string());
            return Err(Error::Usage(format!(
                "process.capabilities: {name} cannot be granted here (not held by the runtime)"
            )));
        }
        // Ambient capabilities the kernel cannot raise (outside permitted or
        // inheritable) are left out, as runc does with a warning.
        Ok(CapSets {
            ambient: self.ambient & self.permitted & self.inheritable,
            ..self
        })
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

pub fn rlimit_resource(typ: PosixRlimitType) -> libc::c_int {
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
