//! `nexcage holder`: the process our caller reaps. See the module docs of `supervise`.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::protocol::{read_line, send_fds, send_line};
use super::{INIT_PID, STARTED};
use crate::error::{Error, IoContext, Result};

/// The listening socket is passed to the holder as this fd by `create`.
pub const LISTENER_FD: i32 = 3;
/// How long init may take to call in after the start command returned.
const INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Exit status when init vanished without reporting (killed with SIGKILL).
const KILLED: i32 = 128 + 9;

/// Waits for `start`, runs `start_cmd`, hands fds 0-2 to init, then exits with the
/// workload's status. Returns the exit code.
pub fn run(dir: &Path, start_cmd: &[OsString]) -> Result<i32> {
    // SAFETY: `create` passed us this listening socket as fd 3.
    let listener = unsafe { UnixListener::from_raw_fd(LISTENER_FD) };
    let starter = loop {
        let (conn, _) = listener.accept().context(|| "accept on holder socket")?;
        match read_line(&conn)?.as_deref() {
            Some("start") => break conn,
            // `delete` of a container whose creator died before noting our pid.
            Some("stop") => return Ok(KILLED),
            _ => {}
        }
    };
    let mut starter = starter;
    if let Err(reason) = start(dir, start_cmd) {
        let _ = send_line(&mut starter, &format!("error: {reason}"));
        return Ok(255);
    }
    let init = match accept_within(&listener, INIT_TIMEOUT) {
        Ok(init) => init,
        Err(e) => {
            let _ = send_line(&mut starter, &format!("error: {e}"));
            return Ok(255);
        }
    };
    match read_line(&init)? {
        Some(line) if line == "init" => {}
        // init could not set the container up; `start` reports why.
        Some(line) if line.starts_with("error: ") => {
            let _ = send_line(&mut starter, &line);
            return Ok(255);
        }
        _ => {
            let _ = send_line(&mut starter, "error: unexpected caller on holder socket");
            return Ok(255);
        }
    }
    // The peer's pid is translated into our (the host's) pid namespace: this is
    // init's host pid, which `kill` and `ps` need.
    let init_pid = nix::sys::socket::getsockopt(&init, nix::sys::socket::sockopt::PeerCredentials)
        .map(|cred| cred.pid())
        .ok();
    if let Some(pid) = init_pid {
        super::host::write_pid_note(&dir.join(INIT_PID), pid)?;
    }
    send_fds(&init, &[0, 1, 2])?;
    // From now on the workload alone holds the container's stdio, so its readers see
    // EOF when the workload closes it.
    release_stdio()?;
    // Host paths are used up to here: joining the container's mounts changes them.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("start.log"))
        .context(|| "open start.log")?;
    File::create(dir.join(STARTED)).context(|| "mark started")?;
    if let Some((pid, Err(e))) = init_pid.map(|pid| (pid, join_namespaces(pid))) {
        // Never leave the engine a pid whose namespaces are the host's.
        // SAFETY: kill(2) on the init that just called in.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = send_line(&mut starter, &format!("error: {e}"));
        return Ok(255);
    }
    send_line(&mut starter, "ok")?;
    drop(starter);
    // init may first explain why the workload could not start ("error: ..."); that
    // goes to start.log, as the workload's stdio is not ours to write to.
    while let Some(line) = read_line(&init)? {
        if let Some(code) = line.strip_prefix("exit ") {
            return Ok(code.parse().unwrap_or(255));
        }
        let _ = std::io::Write::write_all(&mut log, format!("{line}\n").as_bytes());
    }
    Ok(KILLED)
}

/// Our pid is the container's for the engine (`--pid-file`): podman enters
/// `/proc/PID/ns/*` for `cp`, `--net/--uts/--ipc container:` and the like, so the
/// holder moves into the container's namespaces, all but the pid and user namespace
/// (a process cannot change its own pid namespace; the user namespace is left so
/// that the holder keeps its rights to signal and report).
fn join_namespaces(init: i32) -> Result<()> {
    use nix::sched::{CloneFlags, setns};
    for (name, flag) in [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{init}/ns/{name}");
        let ns = match File::open(&path) {
            Ok(ns) => ns,
            // A short workload: the container is gone already, nothing to join.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("open {path}"), e)),
        };
        setns(&ns, flag).context(|| format!("join {path}"))?;
    }
    Ok(())
}

/// Runs the backend's start command with its output in `start.log`, not in the
/// container's stdio. The log is opened for appending, so that the start command may
/// also name it as its own log file.
fn start(dir: &Path, start_cmd: &[OsString]) -> std::result::Result<(), String> {
    let log_path = dir.join("start.log");
    File::create(&log_path).map_err(|e| e.to_string())?;
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .map_err(|e| e.to_string())?;
    let err_log = log.try_clone().map_err(|e| e.to_string())?;
    let (program, args) = start_cmd.split_first().ok_or("no start command")?;
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .status()
        .map_err(|e| format!("{}: {e}", program.to_string_lossy()))?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    Err(format!(
        "{} failed ({status}): {}",
        start_cmd
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        reason(&text)
    ))
}

/// The first error of a liblxc log (`... ERROR  conf - src/conf.c:fn:N - what`) is
/// the cause; later ones only say that the start failed. Else the last lines.
fn reason(log: &str) -> String {
    if let Some(line) = log.lines().find(|l| l.contains(" ERROR ")) {
        let after = line.split_once(" ERROR ").map_or(line, |(_, a)| a);
        let mut parts = after.splitn(3, " - ");
        if let (Some(_), Some(_), Some(what)) = (parts.next(), parts.next(), parts.next()) {
            return what.trim().to_string();
        }
        return after.trim().to_string();
    }
    let tail: Vec<&str> = log.lines().rev().take(3).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

pub fn accept_within(listener: &UnixListener, timeout: Duration) -> Result<UnixStream> {
    let mut fds = [PollFd::new(
        // SAFETY: the listener outlives the poll.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(listener.as_raw_fd()) },
        PollFlags::POLLIN,
    )];
    let ms = PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    let ready = poll(&mut fds, ms).context(|| "wait for init")?;
    if ready == 0 {
        return Err(Error::Usage(format!(
            "the container's init did not call in within {}s",
            timeout.as_secs()
        )));
    }
    Ok(listener.accept().context(|| "accept init")?.0)
}

fn release_stdio() -> Result<()> {
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context(|| "open /dev/null")?;
    nix::unistd::dup2_stdin(&null)
        .and_then(|()| nix::unistd::dup2_stdout(&null))
        .and_then(|()| nix::unistd::dup2_stderr(&null))
        .context(|| "release stdio")
}
