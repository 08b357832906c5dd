//! Moving the calling process into a running container: its cgroups (so that stats
//! and limits are the container's) and its namespaces (so that `/proc/PID/ns/*` of
//! the pid engines are given is the container's).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};

use crate::error::{Error, IoContext, Result};

/// Namespaces joined, in order: user last, since entering it gives up the host's
/// privileges the others need. pid is not here: it is chosen when the process is
/// made (`setns` of a pid namespace applies to children only).
const NAMESPACES: [(&str, CloneFlags); 6] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("user", CloneFlags::CLONE_NEWUSER),
];

/// Opened namespaces of a process, to be entered later (once entered, `/proc` may be
/// another pid namespace's and the process no longer findable by its host pid).
pub struct Namespaces(Vec<(File, CloneFlags, String)>);

impl Namespaces {
    /// The namespaces of `pid` that differ from ours; `skip` names ones to leave.
    pub fn of(pid: i32, skip: &[&str]) -> Result<Namespaces> {
        let mut out = Vec::new();
        for (name, flag) in NAMESPACES {
            if skip.contains(&name) {
                continue;
            }
            let path = format!("/proc/{pid}/ns/{name}");
            let theirs = fs::metadata(&path).context(|| format!("stat {path}"))?;
            let ours = fs::metadata(format!("/proc/self/ns/{name}"))
                .context(|| format!("stat /proc/self/ns/{name}"))?;
            if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
                continue;
            }
            let file = File::open(&path).context(|| format!("open {path}"))?;
            out.push((file, flag, path));
        }
        Ok(Namespaces(out))
    }

    /// With the namespace at `path` (of kind `name`) entered first: while we are still
    /// the host's root, before a user namespace takes that away.
    pub fn with_first(mut self, path: &std::path::Path, name: &str) -> Result<Namespaces> {
        let flag = NAMESPACES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| Error::Usage(format!("unknown namespace kind {name}")))?;
        let file = File::open(path).context(|| format!("open {}", path.display()))?;
        self.0.insert(0, (file, flag, path.display().to_string()));
        Ok(self)
    }

    /// Enters them all, in order. Async-signal-safe apart from error formatting.
    pub fn enter(&self) -> Result<()> {
        for (file, flag, path) in &self.0 {
            setns(file, *flag).context(|| format!("join {path}"))?;
        }
        Ok(())
    }

    /// fds and setns(2) flags, for a child to enter between fork and exec.
    pub fn raw(&self) -> Vec<(std::os::fd::RawFd, libc::c_int)> {
        use std::os::fd::AsRawFd;
        self.0
            .iter()
            .map(|(file, flag, _)| (file.as_raw_fd(), flag.bits()))
            .collect()
    }

    /// Whether the user namespace is among them.
    pub fn has_user(&self) -> bool {
        self.0
            .iter()
            .any(|(_, flag, _)| *flag == CloneFlags::CLONE_NEWUSER)
    }
}

/// What a child needs to move into a running container between fork and exec: its
/// cgroups' `cgroup.procs` and its namespaces, opened or named beforehand.
pub struct Join {
    procs: Vec<std::ffi::CString>,
    namespaces: Namespaces,
}

impl Join {
    /// To join the cgroups and namespaces of `pid` (ours that differ).
    pub fn prepare(pid: i32) -> Result<Join> {
        let procs = cgroup_dirs(pid)?
            .into_iter()
            .map(|(_, dir)| {
                std::ffi::CString::new(
                    dir.join("cgroup.procs")
                        .into_os_string()
                        .into_encoded_bytes(),
                )
                .map_err(|e| Error::Usage(format!("cgroup path: {e}")))
            })
            .collect::<Result<_>>()?;
        Ok(Join {
            procs,
            namespaces: Namespaces::of(pid, &[])?,
        })
    }

    /// Async-signal-safe: open/write/close and setns(2) only.
    pub fn enter(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        for path in &self.procs {
            // SAFETY: a valid C string; "0" moves the writer.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if n != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        for (file, flag, _) in &self.namespaces.0 {
            // SAFETY: setns on a namespace fd we hold.
            if unsafe { libc::setns(file.as_raw_fd(), flag.bits()) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // In a user namespace the host's root is nobody: become its root, or the
        // exec that follows drops every capability (nsenter does the same).
        if self.namespaces.has_user() {
            // SAFETY: set*id(2) on ourselves.
            unsafe {
                libc::setgroups(0, std::ptr::null());
                if libc::setresgid(0, 0, 0) < 0 || libc::setresuid(0, 0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// Writes `sysctls` (`net.*`) in the network namespace at `path`, from a thread of
/// ours that joins it: /proc/sys/net is the opening thread's namespace's. For a
/// manager whose init is in a network namespace of its own while the workload joins
/// the engine's.
pub fn net_sysctls_in(path: &std::path::Path, sysctls: &[(String, String)]) -> Result<()> {
    let ns = File::open(path).context(|| format!("open {}", path.display()))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<()> {
                setns(&ns, CloneFlags::CLONE_NEWNET)
                    .context(|| format!("join {}", path.display()))?;
                sysctls
                    .iter()
                    .try_for_each(|(key, value)| super::confine::write_sysctl(key, value))
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Usage("sysctl writer panicked".into())))
    })
}

/// Whether `path` is a namespace of the kind `flag` names (ioctl NS_GET_NSTYPE).
pub fn is_namespace_of(path: &std::path::Path, flag: CloneFlags) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    let file = File::open(path)?;
    // SAFETY: an ioctl without arguments on a file we hold.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if kind < 0 {
        let e = std::io::Error::last_os_error();
        // Not a namespace file at all.
        return if e.raw_os_error() == Some(libc::ENOTTY) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(kind == flag.bits())
}

/// Whether `pid` can be a container's init calling in: a process in a mount
/// namespace other than ours (every container has its own; init need not be pid 1,
/// as a container may join another's pid namespace).
pub fn is_in_a_container(pid: i32) -> bool {
    let ns = |p: &str| fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    ns(&pid.to_string()).is_some_and(|theirs| ns("self") != Some(theirs))
}

/// Moves us into every cgroup `pid` is in, in every hierarchy mounted here.
pub fn cgroups(pid: i32) -> Result<()> {
    for (_, dir) in cgroup_dirs(pid)? {
        let procs = dir.join("cgroup.procs");
        // "0": the writer itself, whatever pid namespace it is in.
        fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .and_then(|mut f| f.write_all(b"0"))
            .map_err(|e| Error::io(format!("join cgroup {}", procs.display()), e))?;
    }
    Ok(())
}

/// The directory of `pid`'s cgroup that holds `controller`'s files: in its v1
/// hierarchy (`true`), else in the unified one if enabled there (`false`).
pub fn cgroup_dir(pid: i32, controller: &str) -> Result<Option<(PathBuf, bool)>> {
    let dirs = cgroup_dirs(pid)?;
    if let Some((_, dir)) = dirs
        .iter()
        .find(|(key, _)| key.iter().any(|c| c == controller))
    {
        return Ok(Some((dir.clone(), true)));
    }
    Ok(unified(dirs)
        .filter(|dir| {
            fs::read_to_string(dir.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == controller))
        })
        .map(|dir| (dir, false)))
}

/// `pid`'s cgroup in the unified (v2) hierarchy, if it is mounted here.
pub fn unified_dir(pid: i32) -> Result<Option<PathBuf>> {
    Ok(unified(cgroup_dirs(pid)?))
}

fn unified(dirs: Vec<(Vec<String>, PathBuf)>) -> Option<PathBuf> {
    dirs.into_iter()
        .find(|(key, _)| key.is_empty())
        .map(|(_, dir)| dir)
}

/// `pid`'s cgroup in each hierarchy mounted here, by hierarchy (see `CgroupMount`).
fn cgroup_dirs(pid: i32) -> Result<Vec<(Vec<String>, PathBuf)>> {
    let path = format!("/proc/{pid}/cgroup");
    let theirs = fs::read_to_string(&path).context(|| format!("read {path}"))?;
    let mounts = cgroup_mounts()?;
    let mut out = Vec::new();
    for line in theirs.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(cgroup)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let key = hierarchy_key(controllers.split(','));
        // A hierarchy not mounted here, or a cgroup outside its mount: nothing to see.
        let Some(mount) = mounts.iter().find(|m| m.key == key) else {
            continue;
        };
        let Some(rel) = cgroup.strip_prefix(mount.root.as_str()) else {
            continue;
        };
        out.push((key, mount.point.join(rel.trim_start_matches('/'))));
    }
    Ok(out)
}

/// The cgroup hierarchies mounted here: mount point and controllers (empty: v2).
pub fn hierarchies() -> Result<Vec<(PathBuf, Vec<String>)>> {
    Ok(cgroup_mounts()?
        .into_iter()
        .map(|m| (m.point, m.key))
        .collect())
}

struct CgroupMount {
    /// Sorted controllers (and `name=`) of a v1 hierarchy; empty for cgroup2.
    key: Vec<String>,
    root: String,
    point: PathBuf,
}

fn hierarchy_key<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut key: Vec<String> = items
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    key.sort();
    key
}

/// cgroup mounts from mountinfo: `ID PARENT MAJ:MIN ROOT POINT OPTS ... - TYPE SRC SUPER`.
fn cgroup_mounts() -> Result<Vec<CgroupMount>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context(|| "read /proc/self/mountinfo")?;
    // Controller names, to tell them from other super options (xattr, noprefix...).
    let controllers: Vec<String> = fs::read_to_string("/proc/cgroups")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let tail: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (fields.get(3), fields.get(4), tail.first())
        else {
            continue;
        };
        let key = match *fstype {
            "cgroup2" => Vec::new(),
            "cgroup" => hierarchy_key(
                tail.get(2)
                    .unwrap_or(&"")
                    .split(',')
                    .filter(|o| o.starts_with("name=") || controllers.iter().any(|c| c == o)),
            ),
            _ => continue,
        };
        // A hierarchy mounted twice: the first mount is as good as any.
        if out.iter().any(|m: &CgroupMount| m.key == key) {
            continue;
        }
        out.push(CgroupMount {
            key,
            root: unescape(root),
            point: PathBuf::from(unescape(point)),
        });
    }
    Ok(out)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
