//! `exec` inside a supervised container: what `nexcage enter` is told, the process
//! composed as runc composes it (see `host::Supervisor::exec` for how it gets in).

use std::ffi::OsString;
use std::fs;
use std::path::Path;

use crate::cli;
use crate::error::{Error, IoContext, Result};
use crate::supervise::{self, BINARY, PROCESS};

/// What `nexcage enter` is given: its argv (the runtime dir is at `mount_point`
/// inside), the process's environment (passed as `enter`'s own: a command line is
/// readable by every local user, an environment only by its owner), and whether the
/// process wants a terminal. The process is the one from `--process`, or the
/// container's own (process.json in the runtime dir) changed by the flags, as runc
/// composes it.
pub struct Enter {
    pub args: Vec<OsString>,
    pub env: Vec<String>,
    pub terminal: bool,
}

pub fn enter_args(a: &cli::ExecArgs, dir: &Path, mount_point: &str) -> Result<Enter> {
    let read_process = |path: &Path| -> Result<oci_spec::runtime::Process> {
        let text = fs::read(path).context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
    };
    let (p, args, terminal) = match &a.process {
        Some(path) => {
            let p = read_process(path)?;
            let args = p
                .args()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(OsString::from)
                .collect();
            let terminal = p.terminal().unwrap_or(false);
            (p, args, terminal)
        }
        None => (read_process(&dir.join(PROCESS))?, a.command.clone(), a.tty),
    };
    // What `enter` cannot do is refused, never dropped.
    if a.process_label.as_deref().is_some_and(|l| !l.is_empty())
        || p.selinux_label().as_deref().is_some_and(|l| !l.is_empty())
    {
        return Err(Error::Usage(
            "exec with an SELinux process label is not supported by this backend".into(),
        ));
    }
    if !a.cgroup.is_empty() {
        return Err(Error::Usage(
            "exec --cgroup (a sub-cgroup) is not supported by this backend".into(),
        ));
    }
    let user = p.user();
    let (mut uid, mut gid) = (user.uid(), user.gid());
    let mut groups = user.additional_gids().clone().unwrap_or_default();
    let mut env = p.env().clone().unwrap_or_default();
    let mut cwd = p.cwd().to_string_lossy().into_owned();
    if a.process.is_none() {
        if let Some(u) = &a.user {
            (uid, gid) = supervise::identity::Identity::parse_user(u)
                .ok_or_else(|| Error::Usage(format!("invalid --user {u:?}")))?;
        }
        // runc adds them to the process's own.
        groups.extend(additional_gids(a)?);
        env.extend(a.env.iter().cloned());
        if let Some(c) = &a.cwd {
            cwd = c.clone();
        }
    }
    let nnp = a.no_new_privs || p.no_new_privileges().unwrap_or(false);
    let mut caps = p
        .capabilities()
        .as_ref()
        .map(supervise::identity::CapSets::from_spec);
    // runc's `exec --cap` adds to the bounding, effective and permitted sets (of a
    // process that has sets; one without keeps everything anyway).
    for name in &a.cap {
        let cap: caps::Capability = name
            .parse()
            .map_err(|_| Error::Usage(format!("unknown capability {name:?}")))?;
        let Some(c) = caps.as_mut() else { continue };
        c.bounding |= cap.bitmask();
        c.effective |= cap.bitmask();
        c.permitted |= cap.bitmask();
    }
    let mut out: Vec<OsString> = vec![format!("{mount_point}/{BINARY}").into(), "enter".into()];
    // runc's setns init joins the container's session keyring too.
    if let Some(name) = supervise::host::session_keyring(dir) {
        out.extend(["--session-keyring".into(), name.into()]);
    }
    out.extend([
        "--cwd".into(),
        cwd.into(),
        "--uid".into(),
        uid.to_string().into(),
    ]);
    out.extend(["--gid".into(), gid.to_string().into()]);
    for g in groups {
        out.extend(["--group".into(), g.to_string().into()]);
    }
    if nnp {
        out.push("--no-new-privileges".into());
    }
    if let Some(c) = caps {
        out.extend(["--caps".into(), c.arg().into()]);
    }
    // The container's filter applies to what runs in it later too, as with runc.
    if dir
        .join(supervise::INSIDE)
        .join(supervise::SECCOMP_BPF)
        .exists()
    {
        out.extend([
            "--seccomp".into(),
            format!("{mount_point}/{}", supervise::SECCOMP_BPF).into(),
        ]);
    }
    let apparmor = a.apparmor.as_deref().or(p.apparmor_profile().as_deref());
    if let Some(profile) = apparmor.filter(|p| !p.is_empty()) {
        out.extend(["--apparmor".into(), profile.into()]);
    }
    // The process's rlimits, as runc applies them to what it execs.
    for r in p.rlimits().iter().flatten() {
        let resource = supervise::identity::rlimit_resource(r.typ());
        out.extend([
            "--rlimit".into(),
            format!("{resource}:{}:{}", r.soft(), r.hard()).into(),
        ]);
    }
    out.push("--".into());
    out.extend(args);
    Ok(Enter {
        args: out,
        env,
        terminal,
    })
}

/// `exec --additional-gids`, as numbers.
pub fn additional_gids(a: &cli::ExecArgs) -> Result<Vec<u32>> {
    a.additional_gids
        .iter()
        .map(|g| {
            g.parse()
                .map_err(|_| Error::Usage(format!("invalid gid {g:?}")))
        })
        .collect()
}

/// runc's rules and words for an exec's terminal and console socket: the socket,
/// connected, where the process has a terminal and the caller gave one.
pub fn console_socket(
    a: &cli::ExecArgs,
    terminal: bool,
) -> Result<Option<std::os::unix::net::UnixStream>> {
    match (terminal, &a.console_socket) {
        (true, Some(socket)) => Ok(Some(super::protocol::connect_long(socket)?)),
        (true, None) if a.detach => Err(Error::Usage(
            "cannot allocate tty if runc will detach without setting console socket".into(),
        )),
        (false, Some(_)) => Err(Error::Usage(
            "cannot use console socket if runc will not detach or allocate tty".into(),
        )),
        _ => Ok(None),
    }
}
