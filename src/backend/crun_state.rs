//! A crun container's status read as `crun state` reads it (libcrun `status.c`,
//! `libcrun_get_container_state_string`), without running crun: its `status` file,
//! the process's start time, the exec fifo (there until `start`), the freezer. crun's
//! start alone costs more than all of this. Anything unexpected gives `None`, and the
//! caller asks crun itself, so an unknown crun version is only slower, never wrong.

use std::path::Path;

use serde::Deserialize;

use super::{Observed, Status};

/// What crun writes to `<root>/<id>/status` that its state depends on.
#[derive(Deserialize)]
struct StatusFile {
    pid: i32,
    /// Absent in old status files: crun then trusts the pid alone.
    #[serde(rename = "process-start-time", default)]
    start_time: u64,
    #[serde(rename = "cgroup-path")]
    cgroup_path: String,
}

pub fn observe(root: &Path, id: &str) -> Option<Observed> {
    let dir = root.join(id);
    let text = std::fs::read(dir.join("status")).ok()?;
    let status: StatusFile = serde_json::from_slice(&text).ok()?;
    if status.pid <= 0 {
        return None;
    }
    let stopped = Observed {
        pid: 0,
        status: Status::Stopped,
    };
    if !alive(status.pid, status.start_time)? {
        return Some(stopped);
    }
    let status_now = if dir.join("exec.fifo").exists() {
        Status::Created
    } else if paused(&status.cgroup_path)? {
        Status::Paused
    } else {
        Status::Running
    };
    Some(Observed {
        pid: status.pid,
        status: status_now,
    })
}

/// libcrun_is_container_running: the pid exists, and is the process crun started
/// (same start time, not a zombie). None: we may not ask (EPERM).
fn alive(pid: i32, start_time: u64) -> Option<bool> {
    // SAFETY: kill(2) with signal 0 only checks the pid.
    if unsafe { libc::kill(pid, 0) } < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ESRCH) => Some(false),
            _ => None,
        };
    }
    if start_time == 0 {
        return Some(true);
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Some(false);
    };
    // After the command name (in parentheses, anything inside): state, then field 22
    // of the whole line, the start time, 19 fields on.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let started: u64 = fields.nth(18)?.parse().ok()?;
    Some(started == start_time && state != "Z" && state != "X")
}

/// libcrun_cgroup_is_container_paused: the freezer of the container's cgroup (v2's
/// `cgroup.freeze` on a unified host, v1's freezer otherwise). None where crun would
/// fail or differ by version (a cgroup gone meanwhile).
fn paused(cgroup_path: &str) -> Option<bool> {
    if cgroup_path.is_empty() {
        return Some(false);
    }
    let relative = cgroup_path.trim_start_matches('/');
    if relative.split('/').any(|c| c == "..") {
        return None;
    }
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (file, frozen) = if unified {
        (
            Path::new("/sys/fs/cgroup")
                .join(relative)
                .join("cgroup.freeze"),
            "1",
        )
    } else {
        (
            Path::new("/sys/fs/cgroup/freezer")
                .join(relative)
                .join("freezer.state"),
            "FROZEN",
        )
    };
    let content = std::fs::read_to_string(file).ok()?;
    Some(content.contains(frozen))
}
