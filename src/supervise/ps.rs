//! `ps` of a supervised container: the host pids of its cgroup, as runc lists them.

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::backend::Exit;
use crate::error::{Error, IoContext, Result};
use crate::process::exit_code;

/// Host pids in the cgroup of `init` (or of its parent) and below it (v1 `pids`, else
/// the unified tree).
pub fn cgroup_pids(init: i32, parent: bool) -> Result<Vec<i32>> {
    let text =
        fs::read_to_string(format!("/proc/{init}/cgroup")).context(|| "read init's cgroup")?;
    let path = text
        .lines()
        .find_map(|l| {
            l.split_once(":pids:")
                .map(|(_, p)| format!("/sys/fs/cgroup/pids{p}"))
        })
        .or_else(|| {
            text.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| format!("/sys/fs/cgroup{p}")))
        })
        .ok_or_else(|| Error::Usage("cannot find the container's cgroup".into()))?;
    let top = match Path::new(&path).parent() {
        Some(up) if parent => up.to_path_buf(),
        _ => Path::new(&path).to_path_buf(),
    };
    let mut pids = Vec::new();
    let mut stack = vec![top];
    while let Some(dir) = stack.pop() {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// runc's table: `ps ARGS` (default `-ef`), header plus the container's lines.
pub fn print_ps_table(pids: &[i32], ps_args: &[OsString]) -> Result<Exit> {
    let mut cmd = Command::new("ps");
    if ps_args.is_empty() {
        cmd.arg("-ef");
    } else {
        cmd.args(ps_args);
    }
    let out = cmd.stdin(Stdio::null()).output().context(|| "run ps")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| Error::Usage("ps output has no PID column".into()))?;
    let mut table = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            table.push_str(line);
            table.push('\n');
        }
    }
    crate::output::emit(&table)?;
    Ok(exit_code(out.status))
}
