//! What every backend refuses before anything is made, in runc's words: the
//! process runc validates (`validateProcessSpec`), and namespace paths that must be
//! namespaces of the kind the spec says (runc finds out only in its nsexec, with
//! three log lines and no path; crun not at all for some kinds).

use std::path::Path;

use nix::sched::CloneFlags;
use std::os::unix::fs::MetadataExt;

use oci_spec::runtime::{Linux, LinuxNamespace, LinuxNamespaceType, Spec};

use crate::bundle::Outline;

use crate::error::{Error, Result};

/// For `create` and `run`: a process to run, and namespaces that can be joined.
pub fn check(spec: &Outline) -> Result<()> {
    let process = spec
        .process
        .as_ref()
        .ok_or_else(|| Error::Usage("config.json: process property must not be empty".into()))?;
    let cwd = &process.cwd;
    if cwd.as_os_str().is_empty() {
        return Err(Error::Usage("Cwd property must not be empty".into()));
    }
    if !cwd.is_absolute() {
        return Err(Error::Usage("Cwd must be an absolute path".into()));
    }
    if process.args.as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::Usage("args must not be empty".into()));
    }
    let namespaces = spec
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_deref())
        .unwrap_or_default();
    hostname_allowed(spec.hostname.as_deref(), namespaces).map_err(Error::Usage)?;
    for ns in namespaces {
        if let Some(path) = ns.path() {
            namespace_path(ns.typ(), path).map_err(Error::Usage)?;
        }
    }
    Ok(())
}

/// A hostname needs a UTS namespace of the container's own (runc's words).
pub fn hostname(spec: &Spec) -> std::result::Result<(), String> {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or_default();
    hostname_allowed(spec.hostname().as_deref(), namespaces)
}

fn hostname_allowed(
    hostname: Option<&str>,
    namespaces: &[LinuxNamespace],
) -> std::result::Result<(), String> {
    let has_uts = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Uts);
    if hostname.is_some_and(|h| !h.is_empty()) && !has_uts {
        return Err("unable to set hostname without a private UTS namespace".into());
    }
    Ok(())
}

/// A namespace to join: an absolute path (LXC would read anything else as a
/// container's name) to a namespace of kind `typ`.
pub fn namespace_path(typ: LinuxNamespaceType, path: &Path) -> std::result::Result<(), String> {
    let (flag, name) = match typ {
        LinuxNamespaceType::Network => (CloneFlags::CLONE_NEWNET, "network"),
        LinuxNamespaceType::Pid => (CloneFlags::CLONE_NEWPID, "pid"),
        LinuxNamespaceType::Ipc => (CloneFlags::CLONE_NEWIPC, "ipc"),
        LinuxNamespaceType::Uts => (CloneFlags::CLONE_NEWUTS, "uts"),
        LinuxNamespaceType::Cgroup => (CloneFlags::CLONE_NEWCGROUP, "cgroup"),
        LinuxNamespaceType::User => (CloneFlags::CLONE_NEWUSER, "user"),
        LinuxNamespaceType::Mount => (CloneFlags::CLONE_NEWNS, "mount"),
        LinuxNamespaceType::Time => (CloneFlags::from_bits_retain(libc::CLONE_NEWTIME), "time"),
    };
    if !path.is_absolute() {
        return Err(format!(
            "linux.namespaces: {name} namespace path {} is not absolute",
            path.display()
        ));
    }
    match crate::supervise::join::is_namespace_of(path, flag) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "linux.namespaces: {} is not a {name} namespace",
            path.display()
        )),
        Err(e) => Err(format!(
            "linux.namespaces: {name} namespace {}: {e}",
            path.display()
        )),
    }
}

/// runc's rule (libcontainer/configs/validate `sysctl`): only a sysctl of a namespace
/// the container has its own of; anything else would set the host's
/// (`kernel.core_pattern` is a way to run a program as the host's root).
pub fn sysctl(key: &str, linux: &Linux) -> std::result::Result<(), String> {
    // An empty name would name no sysctl (LXC: a bare `lxc.sysctl.`), a `/` another
    // path under /proc/sys.
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!("linux.sysctl key {key:?}"));
    }
    let own = |typ: LinuxNamespaceType| {
        linux
            .namespaces()
            .iter()
            .flatten()
            .find(|n| n.typ() == typ)
            .is_some_and(|n| match n.path() {
                None => true,
                // Joining the host's own is not a namespace of the container's.
                Some(path) => {
                    let ino = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
                    let name = if typ == LinuxNamespaceType::Network {
                        "net"
                    } else {
                        "ipc"
                    };
                    ino(path) != ino(&Path::new("/proc/self/ns").join(name))
                }
            })
    };
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let refused = |why: &str| Err(format!("linux.sysctl {key:?} ({why})"));
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        return if own(LinuxNamespaceType::Ipc) {
            Ok(())
        } else {
            refused("not allowed in the host's ipc namespace")
        };
    }
    if key.starts_with("net.") {
        return if own(LinuxNamespaceType::Network) {
            Ok(())
        } else {
            refused("not allowed in the host's network namespace")
        };
    }
    if key == "kernel.domainname" && own(LinuxNamespaceType::Uts) {
        return Ok(());
    }
    if key == "kernel.hostname" {
        return refused("use the hostname field instead");
    }
    refused("not in a separate kernel namespace")
}
