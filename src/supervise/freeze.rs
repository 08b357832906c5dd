//! The cgroup freezer of a container's cgroup (v1 `freezer.state`, v2
//! `cgroup.freeze`), as runc pauses and resumes.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a freeze may take to settle (tasks in uninterruptible sleep delay it).
const SETTLE: Duration = Duration::from_secs(10);

/// The file that freezes `pid`'s cgroup, and whether it is v1's.
fn control(pid: i32) -> Result<(PathBuf, bool)> {
    if let Some((dir, true)) = super::join::cgroup_dir(pid, "freezer")? {
        return Ok((dir.join("freezer.state"), true));
    }
    // v2 has no freezer controller: every non-root cgroup has cgroup.freeze.
    super::join::unified_dir(pid)?
        .map(|dir| (dir.join("cgroup.freeze"), false))
        .filter(|(p, _)| p.exists())
        .ok_or_else(|| Error::Usage("no cgroup freezer for this container".into()))
}

pub fn is_frozen(pid: i32) -> bool {
    let Ok((path, v1)) = control(pid) else {
        return false;
    };
    let state = fs::read_to_string(path).unwrap_or_default();
    if v1 {
        state.trim() == "FROZEN"
    } else {
        state.trim() == "1"
    }
}

/// Freezes or thaws, and waits until the kernel says it is done.
pub fn set(pid: i32, frozen: bool) -> Result<()> {
    let (path, v1) = control(pid)?;
    let value = match (v1, frozen) {
        (true, true) => "FROZEN",
        (true, false) => "THAWED",
        (false, true) => "1",
        (false, false) => "0",
    };
    let deadline = Instant::now() + SETTLE;
    loop {
        fs::write(&path, value).map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        let now = fs::read_to_string(&path).unwrap_or_default();
        // v1 passes through FREEZING; v2's cgroup.events says "frozen 1" once done.
        let settled = if v1 {
            now.trim() == value
        } else {
            let events = path.with_file_name("cgroup.events");
            fs::read_to_string(events)
                .unwrap_or_default()
                .lines()
                .any(|l| l == format!("frozen {}", u8::from(frozen)))
        };
        if settled {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Usage(format!(
                "the container did not settle {} within {}s",
                if frozen { "frozen" } else { "thawed" },
                SETTLE.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
