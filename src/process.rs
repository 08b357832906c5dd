//! Running delegate programs.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};

use crate::error::{Error, IoContext, Result};

/// Exit code a shell would report: the code, or 128+N for death by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

pub fn spawn(cmd: &mut Command) -> Result<Child> {
    cmd.spawn()
        .context(|| format!("run {}", cmd.get_program().to_string_lossy()))
}

/// Replaces this process with `cmd`: stdio, signals, tty and exit status become the
/// delegate's own, at no cost.
pub fn exec(mut cmd: Command) -> Error {
    let err = cmd.exec();
    Error::io(format!("exec {}", cmd.get_program().to_string_lossy()), err)
}

/// Keeps the run lock (an OFD lock on `lock`'s open file description) held by whatever
/// this process execs next: it is duplicated to an inheritable fd at or above `min_fd`
/// (above any fds the caller passes to the container, which the delegate closes in the
/// container anyway).
pub fn inherit_lock(lock: std::fs::File, min_fd: i32) -> Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    fcntl(&lock, FcntlArg::F_DUPFD(min_fd)).context(|| "pass the run lock on")?;
    Ok(())
}

/// fds a socket-activated caller (systemd's LISTEN_FDS) passes before the
/// `--preserve-fds` ones.
pub fn listen_fds() -> i32 {
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
