//! nexcage's record of each container: which backend owns it, decided once at create.
//!
//! Layout under the root:
//!   containers/<id>   the record (JSON, written complete before the id becomes visible)
//!   backends/<name>/  each OCI backend's own `--root`, so nothing collides with a
//!                     system runc/crun
//! A record is written under a temporary name and renamed into place with
//! RENAME_NOREPLACE, so an id is either fully claimed or free. Two locks live on it:
//! - a flock serialises create/delete (exclusive) against readers (shared);
//! - for a foreground `run`, an OFD write lock (independent of flocks) is held by the
//!   process the container lives in, so a record outliving it can be recognised.
//!
//! One file, not a directory holding one: every inode made is paid on each create, and
//! on a disk-backed /run (ext4 on the CI machine) an inode costs 0.1-0.3 ms.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, Flock, FlockArg, RenameFlags, fcntl, renameat2};
use serde::{Deserialize, Serialize};

use crate::config::BackendConfig;
use crate::error::{Error, IoContext, Result};
use crate::ids;

const TEMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Name of the backend in the config that was in force at create.
    pub backend: String,
    /// That backend's settings, frozen so later commands need no config file.
    pub backend_config: BackendConfig,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339, nanoseconds, UTC.
    pub created: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The container process's environment from the bundle: `exec --env` adds to it.
    #[serde(default)]
    pub process_env: Vec<String>,
    /// Foreground `run` without `--keep`: the container ends with the process holding
    /// the run lock, and the delegate removes its own state then.
    #[serde(default)]
    pub ephemeral: bool,
}

#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
}

/// An exclusively flocked record; the lock goes with the value.
pub struct Locked {
    path: PathBuf,
    file: Flock<File>,
    /// The run lock is set on `file`'s open file description.
    run_lock: bool,
}

impl Root {
    /// `--root`, else `/run/nexcage` for root, else `$XDG_RUNTIME_DIR/nexcage`
    /// (an empty value counts as unset, as podman passes `XDG_RUNTIME_DIR=`).
    pub fn resolve(flag: Option<&Path>) -> Result<Root> {
        let path = match flag {
            Some(p) if p.is_absolute() => p.to_path_buf(),
            Some(p) => std::env::current_dir()
                .context(|| "current directory")?
                .join(p),
            None if nix::unistd::geteuid().is_root() => PathBuf::from("/run/nexcage"),
            None => match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
                Some(dir) => PathBuf::from(dir).join("nexcage"),
                None => PathBuf::from(format!("/run/user/{}/nexcage", nix::unistd::geteuid())),
            },
        };
        Ok(Root { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn backend_root(&self, backend: &str) -> PathBuf {
        self.path.join("backends").join(backend)
    }

    fn containers(&self) -> PathBuf {
        self.path.join("containers")
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }

    /// Reads a record, waiting for a create or delete in progress to finish.
    pub fn load(&self, id: &str) -> Result<Record> {
        ids::validate(id)?;
        let path = self.record_path(id);
        let shared = lock(open_record(&path, id)?, FlockArg::LockShared, &path)?;
        read_record(&shared, &path, id)
    }

    /// Claims a new id with its complete record, and keeps it locked for the create.
    pub fn claim(&self, record: &Record) -> Result<Locked> {
        match self.claim_as(&record.id, Some(record)) {
            // A `gc` killed while it held the id left its empty claim behind.
            Err(Error::AlreadyExists(_)) if self.sweep_abandoned_hold(&record.id) => {
                self.claim_as(&record.id, Some(record))
            }
            other => other,
        }
    }

    /// For `gc`: `id` locked against creates and deletes while the leftovers of a
    /// container of that id are collected, with its record if it has one. An id with
    /// no record is claimed empty (readers see no container; a create of it fails as
    /// taken), and freed by `Locked::remove`.
    pub fn hold(&self, id: &str) -> Result<(Locked, Option<Record>)> {
        for _ in 0..3 {
            match self.lock(id) {
                Ok((locked, record)) => return Ok((locked, Some(record))),
                Err(Error::NotExist(_)) => {}
                Err(e) => return Err(e),
            }
            match self.claim_as(id, None) {
                Ok(locked) => return Ok((locked, None)),
                // A create got in between, or another gc holds it: look again.
                Err(Error::AlreadyExists(_)) => {
                    self.sweep_abandoned_hold(id);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::State {
            id: id.to_string(),
            reason: "busy: created and deleted while gc looked at it".into(),
        })
    }

    /// An empty claim whose holder is gone (nobody has it locked) is removed.
    fn sweep_abandoned_hold(&self, id: &str) -> bool {
        let path = self.record_path(id);
        let Ok(file) = File::open(&path) else {
            return false;
        };
        let Ok(locked) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            return false;
        };
        // Still the one at `path` (not removed meanwhile), and empty.
        let empty_claim = locked
            .metadata()
            .is_ok_and(|m| m.nlink() > 0 && m.len() == 0);
        empty_claim && fs::remove_file(&path).is_ok()
    }

    /// Claims `id` with `record` written in it, or empty (see `hold`).
    fn claim_as(&self, id: &str, record: Option<&Record>) -> Result<Locked> {
        ids::validate(id)?;
        let containers = self.containers();
        // Searchable, not listable: unprivileged containers reach their runtime
        // directory below the root as a mapped uid.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.path)
            .context(|| format!("create {}", self.path.display()))?;
        // Likewise `backends/`, whichever backend's create comes first: crun and runc
        // would make it 0700 as their own root's parent.
        searchable(&self.path.join("backends"))?;
        mkdir_private(&containers)?;
        let temp = containers.join(temp_name());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .context(|| format!("create {}", temp.display()))?;
        let claimed = (|| {
            let mut file = lock(file, FlockArg::LockExclusive, &temp)?;
            let mut run_lock = false;
            if let Some(record) = record {
                write_record(&mut file, &temp, record)?;
                if record.ephemeral {
                    set_run_lock(&file, &temp)?;
                    run_lock = true;
                }
            }
            let target = self.record_path(id);
            match renameat2(
                nix::fcntl::AT_FDCWD,
                &temp,
                nix::fcntl::AT_FDCWD,
                &target,
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => Ok(Locked {
                    path: target,
                    file,
                    run_lock,
                }),
                // ENOTEMPTY: a directory of that name (not one of our records).
                Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => {
                    Err(Error::AlreadyExists(id.to_string()))
                }
                Err(e) => Err(e).context(|| format!("rename into {}", target.display())),
            }
        })();
        if claimed.is_err() {
            let _ = fs::remove_file(&temp);
        }
        claimed
    }

    /// Locks `record`'s container exclusively if it is still that one: `None` if it
    /// was deleted, or deleted and its id reused, meanwhile.
    pub fn lock_same(&self, record: &Record) -> Result<Option<Locked>> {
        match self.lock(&record.id) {
            Ok((locked, current)) if current.created == record.created => Ok(Some(locked)),
            Ok(_) | Err(Error::NotExist(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Locks an existing container exclusively (delete, end of `run`).
    pub fn lock(&self, id: &str) -> Result<(Locked, Record)> {
        ids::validate(id)?;
        let path = self.record_path(id);
        let file = lock(open_record(&path, id)?, FlockArg::LockExclusive, &path)?;
        let record = read_record(&file, &path, id)?;
        Ok((
            Locked {
                path,
                file,
                run_lock: false,
            },
            record,
        ))
    }

    /// All settled records, sorted by id. Sweeps temporaries left by killed creators.
    pub fn list(&self) -> Result<Vec<Record>> {
        let containers = self.containers();
        let entries = match fs::read_dir(&containers) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("read {}", containers.display()), e)),
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.context(|| format!("read {}", containers.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) {
                sweep_if_abandoned(&entry.path());
                continue;
            }
            match self.load(&name) {
                Ok(r) => records.push(r),
                // Deleted while we listed, or not ours: skip rather than fail the listing.
                Err(Error::NotExist(_)) | Err(Error::InvalidId(_)) => {}
                Err(e) => return Err(e),
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    /// Whether the process of a foreground `run` still holds the container's run lock.
    pub fn run_active(&self, id: &str) -> bool {
        let Ok(file) = File::open(self.record_path(id)) else {
            return false;
        };
        let mut probe = whole_file_lock(libc::F_WRLCK);
        fcntl(&file, FcntlArg::F_OFD_GETLK(&mut probe)).is_ok()
            && i32::from(probe.l_type) != libc::F_UNLCK
    }

    /// uid owning the record, as runc reports the owner of its state directory.
    pub fn owner_uid(&self, id: &str) -> Option<u32> {
        fs::metadata(self.record_path(id)).ok().map(|m| m.uid())
    }
}

impl Locked {
    /// For a foreground `run`: the record's open file description, which carries the
    /// run lock, to hand to the container's process (the flock on it is released when
    /// `self` is dropped; the run lock stays while any fd of it is open).
    pub fn take_run_lock(&mut self) -> Result<Option<File>> {
        if !std::mem::take(&mut self.run_lock) {
            return Ok(None);
        }
        let handle = self
            .file
            .try_clone()
            .context(|| format!("keep the run lock of {}", self.path.display()))?;
        Ok(Some(handle))
    }

    /// Frees the id (unlinking it while locked: nobody else can have claimed the name).
    pub fn remove(self) -> Result<()> {
        fs::remove_file(&self.path).context(|| format!("remove {}", self.path.display()))
    }
}

fn open_record(path: &Path, id: &str) -> Result<File> {
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotExist(id.to_string()),
        _ => Error::io(format!("open {}", path.display()), e),
    })
}

fn lock(handle: File, how: FlockArg, path: &Path) -> Result<Flock<File>> {
    Flock::lock(handle, how)
        .map_err(|(_, e)| Error::io(format!("lock {}", path.display()), e.into()))
}

/// The record in a locked `file`. One removed while we waited for the lock (no longer
/// linked), or an empty claim of `gc`'s, is no container.
fn read_record(file: &File, path: &Path, id: &str) -> Result<Record> {
    let meta = file
        .metadata()
        .context(|| format!("stat {}", path.display()))?;
    if meta.nlink() == 0 || meta.len() == 0 {
        return Err(Error::NotExist(id.to_string()));
    }
    let mut text = Vec::with_capacity(meta.len() as usize);
    let mut reader = file;
    reader
        .read_to_end(&mut text)
        .context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| Error::State {
        id: id.to_string(),
        reason: format!("corrupt record {}: {e}", path.display()),
    })
}

/// Written in place: the file becomes visible only by the rename that claims the id,
/// so readers never see a partial record. No fsync: this is runtime state (normally on
/// tmpfs, gone at reboot, like runc's).
fn write_record(file: &mut File, path: &Path, record: &Record) -> Result<()> {
    let body = serde_json::to_vec(record).map_err(|e| Error::State {
        id: record.id.clone(),
        reason: e.to_string(),
    })?;
    file.write_all(&body)
        .context(|| format!("write {}", path.display()))
}

fn set_run_lock(file: &File, path: &Path) -> Result<()> {
    let lock = whole_file_lock(libc::F_WRLCK);
    fcntl(file, FcntlArg::F_OFD_SETLK(&lock))
        .context(|| format!("set the run lock on {}", path.display()))?;
    Ok(())
}

fn whole_file_lock(kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is plain data; all zero is a valid value (whole file from offset 0).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

/// A directory others may pass through (0711), made so or corrected.
fn searchable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match fs::DirBuilder::new().mode(0o711).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(Error::io(format!("create {}", dir.display()), e));
        }
        _ => {}
    }
    let meta = fs::symlink_metadata(dir).context(|| format!("stat {}", dir.display()))?;
    if meta.is_dir() && meta.permissions().mode() & 0o7777 != 0o711 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
            .context(|| format!("chmod {}", dir.display()))?;
    }
    Ok(())
}

fn mkdir_private(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .context(|| format!("create {}", dir.display()))
}

/// A temporary belongs to a process that died mid-create when the process named in it
/// is gone (it is not locked between its creation and its flock, so the lock alone
/// cannot tell) and its lock is free.
fn sweep_if_abandoned(path: &Path) {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let creator = name
        .rsplit('-')
        .nth(1)
        .and_then(|pid| pid.parse::<u32>().ok());
    if creator.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
        return;
    }
    let Ok(handle) = File::open(path) else { return };
    if let Ok(_lock) = Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
        let _ = fs::remove_file(path);
    }
}

/// Unique per process and call; the id is not part of it, so it fits NAME_MAX.
fn temp_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}new-{}-{seq}", std::process::id())
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            backend: "crun".into(),
            backend_config: BackendConfig::Oci {
                path: "/usr/bin/crun".into(),
                flavor: None,
            },
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: now_rfc3339(),
            annotations: BTreeMap::new(),
            process_env: Vec::new(),
            ephemeral: false,
        }
    }

    #[test]
    fn gc_holds_ids_with_or_without_a_record() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::resolve(Some(tmp.path())).unwrap();
        let (held, none) = root.hold("free").unwrap();
        assert!(none.is_none());
        // Held: taken to creates (readers wait for the lock, then see no container).
        assert!(matches!(
            root.claim(&record("free")),
            Err(Error::AlreadyExists(_))
        ));
        held.remove().unwrap();
        root.claim(&record("free")).unwrap();
        let (held, some) = root.hold("free").unwrap();
        assert_eq!(some.unwrap().id, "free");
        drop(held);
        // A gc killed while holding an id leaves an empty claim: the next create sweeps it.
        let (held, _) = root.hold("left").unwrap();
        drop(held);
        assert!(matches!(root.load("left"), Err(Error::NotExist(_))));
        assert_eq!(root.list().unwrap().len(), 1);
        root.claim(&record("left")).unwrap();
    }

    #[test]
    fn claim_load_duplicate_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::resolve(Some(tmp.path())).unwrap();
        let held = root.claim(&record("a")).unwrap();
        assert!(matches!(
            root.claim(&record("a")),
            Err(Error::AlreadyExists(_))
        ));
        drop(held);
        assert_eq!(root.load("a").unwrap().backend, "crun");
        assert_eq!(root.list().unwrap().len(), 1);
        let (locked, _) = root.lock("a").unwrap();
        locked.remove().unwrap();
        assert!(matches!(root.load("a"), Err(Error::NotExist(_))));
        assert!(root.list().unwrap().is_empty());
        assert!(matches!(root.load("../a"), Err(Error::InvalidId(_))));
    }

    #[test]
    fn list_sweeps_only_temporaries_of_dead_creators() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::resolve(Some(tmp.path())).unwrap();
        let containers = tmp.path().join("containers");
        let live = containers.join(format!("{TEMP_PREFIX}new-{}-7", std::process::id()));
        let dead = containers.join(format!("{TEMP_PREFIX}new-{}-7", u32::MAX));
        fs::create_dir_all(&containers).unwrap();
        fs::write(&live, "").unwrap();
        fs::write(&dead, "").unwrap();
        assert!(root.list().unwrap().is_empty());
        assert!(
            live.exists(),
            "a creator between its open and its flock must keep its file"
        );
        assert!(!dead.exists());
    }

    #[test]
    fn run_lock_marks_a_live_foreground_run() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::resolve(Some(tmp.path())).unwrap();
        let mut r = record("e");
        r.ephemeral = true;
        let mut held = root.claim(&r).unwrap();
        let run_lock = held.take_run_lock().unwrap().unwrap();
        drop(held);
        assert!(root.run_active("e"));
        drop(run_lock);
        assert!(!root.run_active("e"));
        assert!(!root.run_active("missing"));
    }
}
