//! What init does to the container before the workload runs, as runc does it:
//! sysctls and the cgroupfs (where the manager cannot set them up), masked paths,
//! read-only paths and a read-only root. These need privileges the
//! workload usually lacks, so they happen in init, before any are dropped.

use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sys::statvfs::{FsFlags, statvfs};

use super::host::{FsMount, Setup};
use crate::error::{Error, Result};

pub fn apply(setup: &Setup) -> Result<()> {
    if setup.dev_symlinks {
        dev_symlinks()?;
    }
    if let Some((path, ro)) = &setup.cgroupfs {
        cgroupfs(Path::new(path), *ro)?;
    }
    for m in &setup.mounts {
        mount_fs(m)?;
    }
    for (path, options) in &setup.restrict {
        restrict(Path::new(path), options)?;
    }
    // Before /proc/sys is made read-only (a read-only path in every default spec).
    for (key, value) in &setup.sysctls {
        write_sysctl(key, value)?;
    }
    for path in &setup.readonly_mounts {
        remount_readonly(Path::new(path))?;
    }
    for path in &setup.masked_paths {
        mask(Path::new(path))?;
    }
    for path in &setup.readonly_paths {
        readonly(Path::new(path))?;
    }
    if setup.readonly_root {
        remount_readonly(Path::new("/"))?;
    }
    Ok(())
}

/// `key` (`net.ipv4.ip_forward`) under /proc/sys, of the namespaces we are in.
pub fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| Error::Usage(format!("sysctl {key}={value:?}: {e}")))
}

/// runc's: /dev/ptmx to the container's devpts, and the process's own fds.
fn dev_symlinks() -> Result<()> {
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Usage(format!("symlink {link}: {e}")));
            }
            _ => {}
        }
    }
    Ok(())
}

fn failed(what: &str, path: &Path, e: nix::errno::Errno) -> Error {
    Error::Usage(format!("{what} {}: {e}", path.display()))
}

/// A directory gets an empty read-only tmpfs, anything else /dev/null; a path the
/// container does not have needs no masking.
fn mask(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let done = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    done.map_err(|e| failed("mask", path, e))
}

fn readonly(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| failed("bind", path, e))?;
    remount_readonly(path)
}

/// A read-only bind remount keeps the flags already there: in a user namespace the
/// kernel refuses to clear locked ones (nosuid, nodev, noexec).
fn remount_readonly(path: &Path) -> Result<()> {
    let kept = kept_flags(path).unwrap_or(MsFlags::empty());
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(|e| failed("remount read-only", path, e))
}

/// The per-mount flags `path`'s mount has now, as mount(2) takes them: a bind
/// remount that leaves one out would clear it (or, in a user namespace, be refused).
fn kept_flags(path: &Path) -> nix::Result<MsFlags> {
    let have = statvfs(path)?.flags();
    let mut flags = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if have.contains(fs) {
            flags |= ms;
        }
    }
    Ok(flags)
}

/// The container's cgroups at `path` as its cgroup namespace shows them: cgroup2
/// alone on a unified host; else a tmpfs with each v1 hierarchy of ours (a combined
/// one, `cpu,cpuacct`, with a link per controller, as systemd makes them) and the
/// unified one at `unified`, as runc lays them out.
fn cgroupfs(path: &Path, ro: bool) -> Result<()> {
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let flags = if ro { base | MsFlags::MS_RDONLY } else { base };
    let ours = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| Error::io("read /proc/self/cgroup", e))?;
    let v1: Vec<&str> = ours
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .filter(|c| !c.is_empty())
        .collect();
    let cgroup2 = |at: &Path| {
        mount(Some("cgroup2"), at, Some("cgroup2"), flags, None::<&str>)
            .map_err(|e| failed("mount cgroup2 on", at, e))
    };
    if v1.is_empty() {
        return cgroup2(path);
    }
    mount(Some("tmpfs"), path, Some("tmpfs"), base, Some("mode=755"))
        .map_err(|e| failed("mount tmpfs on", path, e))?;
    let mkdir = |dir: &Path| {
        std::fs::create_dir(dir).map_err(|e| Error::Usage(format!("mkdir {}: {e}", dir.display())))
    };
    for controllers in v1 {
        let name = controllers.strip_prefix("name=").unwrap_or(controllers);
        let dir = path.join(name);
        mkdir(&dir)?;
        mount(
            Some("cgroup"),
            &dir,
            Some("cgroup"),
            flags,
            Some(controllers),
        )
        .map_err(|e| failed("mount cgroup on", &dir, e))?;
        if name.contains(',') {
            for single in name.split(',') {
                std::os::unix::fs::symlink(name, path.join(single))
                    .map_err(|e| Error::Usage(format!("symlink {single}: {e}")))?;
            }
        }
    }
    if ours.lines().any(|l| l.starts_with("0::")) {
        let unified = path.join("unified");
        mkdir(&unified)?;
        cgroup2(&unified)?;
    }
    if ro {
        mount(
            None::<&str>,
            path,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(|e| failed("remount read-only", path, e))?;
    }
    Ok(())
}

/// mount(2) flags of the options that are flags; the rest is the filesystem's data
/// (`size=`, `mode=`), as runc splits them.
fn flags_and_data(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            other => {
                data.push(other);
                continue;
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, data.join(","))
}

/// A filesystem of the spec's over what the manager mounted there, if anything.
pub fn mount_fs(m: &FsMount) -> Result<()> {
    let path = Path::new(&m.destination);
    std::fs::create_dir_all(path)
        .map_err(|e| Error::Usage(format!("mkdir {}: {e}", path.display())))?;
    if m.staged {
        // A bind, not MS_MOVE: that is refused under a shared parent (the
        // container's /dev may be one). Its flags go with it.
        let staged = Path::new(&m.source);
        mount(
            Some(staged),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| failed("bind the staged mount onto", path, e))?;
        nix::mount::umount2(staged, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| failed("unmount", staged, e))?;
        // The empty directory it was staged at, in the container's own /dev.
        let _ = std::fs::remove_dir(staged);
        return restrict(path, &m.options);
    }
    let (flags, data) = flags_and_data(&m.options);
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(
        Some(m.source.as_str()),
        path,
        Some(m.fstype.as_str()),
        flags,
        data,
    )
    .map_err(|e| failed(&format!("mount {}", m.fstype), path, e))
}

/// The spec's `ro`, `nosuid`, `nodev` and `noexec` added to a mount the manager made,
/// keeping what it has.
pub fn restrict(path: &Path, options: &[String]) -> Result<()> {
    let (wanted, _) = flags_and_data(options);
    let wanted =
        wanted & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    if wanted.is_empty() {
        return Ok(());
    }
    let kept = kept_flags(path).map_err(|e| failed("statvfs", path, e))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | wanted | kept;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(|e| failed("remount", path, e))
}
