//! The holder of a container in a VM (`nexcage vm-holder`): the process the engine
//! sees (`state.pid`, `--pid-file`), a child of the caller with the container's stdio.
//! Fds cannot cross into the VM, so it relays: it connects to the guest's channel,
//! has the container made, says ready; at `start` it starts the workload there and
//! passes its stdin, stdout and stderr, and the signals it gets; it ends as the
//! workload ended (its exit code, or killed by its signal).

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::frames::Frame;
use super::guest::GuestSetup;
use super::protocol::{SocketDir, read_line, send_line};
use super::vm_relay::{self, Channel, GuestProcess};
use super::{SOCKET, STARTED};
use crate::error::{Error, IoContext, Result};

/// In the runtime dir: how the guest makes the container, and the process.
pub const GUEST_SETUP: &str = "guest.json";
pub const GUEST_PROCESS: &str = "guest-process.json";
/// In the runtime dir: the guest's channel's socket path (QEMU listens on it).
pub const RELAY_PATH: &str = "relay";
/// In the runtime dir: the name of the VM's tap in the container's network
/// namespace (none: the VM has no NIC there).
pub const TAP: &str = "tap";

/// Signals passed on to the workload (SIGKILL and SIGSTOP cannot be caught; a
/// SIGKILL of the holder leaves the VM to `delete`).
pub const FORWARDED: [libc::c_int; 9] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCONT,
    libc::SIGWINCH,
    libc::SIGALRM,
];

/// How long QEMU may take to listen, and the guest to boot and make the container.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(dir: &Path, ready_fd: i32) -> Result<i32> {
    // SAFETY: the creator passed us this pipe's write end.
    let mut ready = unsafe { File::from_raw_fd(ready_fd) };
    let prepared = prepare(dir);
    let (channel, listener) = match prepared {
        Ok(p) => {
            std::io::Write::write_all(&mut ready, b"ready\n").context(|| "say ready")?;
            p
        }
        Err(e) => {
            let _ = std::io::Write::write_all(&mut ready, format!("error: {e}\n").as_bytes());
            return Ok(1);
        }
    };
    drop(ready);
    // Until `start`, a signal would kill us with the default action; blocked from
    // here, each is passed on once the workload runs.
    let mut mask = nix::sys::signal::SigSet::empty();
    for s in FORWARDED {
        if let Ok(sig) = nix::sys::signal::Signal::try_from(s) {
            mask.add(sig);
        }
    }
    let joined: Option<u32>;
    loop {
        let (mut conn, _) = listener
            .accept()
            .context(|| "accept on the holder socket")?;
        match read_line(&conn)?.as_deref() {
            Some("start") => {
                // The engine's network is in place by now (Docker's is made by a
                // prestart hook).
                joined = match connect_network(dir, &channel) {
                    Ok(joined) => joined,
                    Err(e) => {
                        send_line(&mut conn, &format!("error: {e}"))?;
                        return Ok(1);
                    }
                };
                std::fs::write(dir.join(STARTED), "").context(|| "mark started")?;
                mask.thread_block()
                    .map_err(|e| Error::io("block signals", e.into()))?;
                send_line(&mut conn, "ok")?;
                break;
            }
            Some("stop") => return Ok(137),
            _ => {}
        }
    }
    channel.dispatch();
    // `exec`s come on the holder's socket from here on, each a process of its own.
    let execs = channel.clone();
    let exec_dir = dir.to_path_buf();
    std::thread::spawn(move || serve_execs(&listener, &execs, &exec_dir));
    let process: GuestProcess = read_json(&dir.join(GUEST_PROCESS))?;
    let terminal = process.process.terminal() == Some(true);
    let forwarder = channel.clone();
    std::thread::spawn(move || {
        while let Ok(sig) = mask.wait() {
            // A resize of our terminal is the guest's pty's.
            let frame = match window_size().filter(|_| terminal && sig as i32 == libc::SIGWINCH) {
                Some((rows, cols)) => Frame::Resize {
                    process: 0,
                    rows,
                    cols,
                },
                None => Frame::Signal {
                    process: 0,
                    signal: sig as i32,
                },
            };
            if forwarder.send(&frame).is_err() {
                return;
            }
        }
    });
    let dup = |fd: i32| -> Result<File> {
        let new = nix::unistd::dup(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
            .map_err(|e| Error::io("dup stdio", e.into()))?;
        Ok(File::from(new))
    };
    let io = vm_relay::Stdio {
        stdin: Some(dup(0)?),
        stdout: dup(1)?,
        stderr: dup(2)?,
    };
    let mut process = process;
    if terminal {
        // The process's terminal starts at ours's size.
        process.window = window_size();
    }
    // A VM that ends without the workload's exit (killed, crashed, stopped in
    // Proxmox) took the workload with it: killed, as runc reports it (137).
    let status = vm_relay::run(&channel, 0, &process, io).unwrap_or_else(|e| {
        log::warn!("{}: {e}", dir.display());
        libc::SIGKILL
    });
    if let Some(index) = joined {
        super::vm_net::disconnect(index);
    }
    Ok(end_as(status))
}

/// On an exec's connection, from its caller: `signal N` for the process.
pub const EXEC_SIGNAL: &str = "signal ";

/// On the holder's socket: `ps` answers `processes <JSON>` (see `guest_ps`).
pub const PS: &str = "ps";

/// On the holder's socket: `signal-all N` signals every process in the guest.
pub const SIGNAL_ALL: &str = "signal-all";

/// In the runtime dir: an `exec`'s process (`exec-<pid>.json`), read and removed by
/// the holder.
pub const EXEC_PREFIX: &str = "exec-";

/// `exec NAME` with the caller's stdin, stdout and stderr passed along: the process
/// in `NAME` (see [`EXEC_PREFIX`]) runs in the guest; `exit STATUS` is the answer.
fn serve_execs(listener: &std::os::unix::net::UnixListener, channel: &Channel, dir: &Path) {
    let mut next_id = 1u32;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let Ok(Some(line)) = read_line(&conn) else {
            continue;
        };
        if let Some(signal) = line
            .strip_prefix(SIGNAL_ALL)
            .and_then(|n| n.trim().parse::<i32>().ok())
        {
            let frame = Frame::Signal {
                process: vm_relay::ALL_PROCESSES,
                signal,
            };
            let reply = if channel.send(&frame).is_ok() {
                "ok"
            } else {
                "error: the VM went away"
            };
            let _ = send_line(&mut conn, reply);
            continue;
        }
        if line == PS {
            let id = next_id;
            next_id = next_id.wrapping_add(1).max(1);
            // A thread, as for an exec: a guest slow to answer holds up nothing else.
            let channel = channel.clone();
            std::thread::spawn(move || {
                let reply = match vm_relay::processes(&channel, id).and_then(|l| {
                    serde_json::to_string(&l).map_err(|e| Error::Usage(e.to_string()))
                }) {
                    Ok(json) => format!("processes {json}"),
                    Err(e) => format!("error: {e}"),
                };
                // The list can be long: the line, then the end of the stream.
                let _ = std::io::Write::write_all(&mut conn, format!("{reply}\n").as_bytes());
            });
            continue;
        }
        let Some(name) = line.strip_prefix("exec ") else {
            continue;
        };
        let id = next_id;
        next_id = next_id.wrapping_add(1).max(1);
        let channel = channel.clone();
        let name = name.to_string();
        let path = dir.join(&name);
        std::thread::spawn(move || {
            let answer = (|| -> Result<i32> {
                if !name_is_an_exec(&name) {
                    return Err(Error::Usage("not an exec's process".into()));
                }
                let mut process: GuestProcess = read_json(&path)?;
                let _ = std::fs::remove_file(&path);
                let mut fds = super::protocol::recv_fds::<3>(&conn)?
                    .into_iter()
                    .map(File::from);
                let (Some(stdin), Some(stdout), Some(stderr)) =
                    (fds.next(), fds.next(), fds.next())
                else {
                    return Err(Error::Usage(
                        "exec: stdin, stdout and stderr expected".into(),
                    ));
                };
                // `signal N` lines from the caller while it runs: its signals, the
                // process's (as runc's foreground exec passes them on).
                if let Ok(lines) = conn.try_clone() {
                    let channel = channel.clone();
                    std::thread::spawn(move || {
                        while let Ok(Some(line)) = read_line(&lines) {
                            let Some(signal) = line
                                .strip_prefix(EXEC_SIGNAL)
                                .and_then(|n| n.trim().parse::<i32>().ok())
                            else {
                                continue;
                            };
                            let frame = Frame::Signal {
                                process: id,
                                signal,
                            };
                            if channel.send(&frame).is_err() {
                                return;
                            }
                        }
                    });
                }
                // A terminal (the engine's pty or the caller's own): its size now,
                // and each change, are the guest pty's.
                let resizes = (process.process.terminal() == Some(true)).then(|| {
                    process.window = window_size_of(&stdin);
                    follow_resizes(&channel, id, &stdin, process.window)
                });
                let io = vm_relay::Stdio {
                    stdin: Some(stdin),
                    stdout,
                    stderr,
                };
                let status = vm_relay::run(&channel, id, &process, io);
                if let Some(done) = resizes {
                    done.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                status
            })();
            let reply = match answer {
                Ok(status) => format!("exit {status}"),
                Err(e) => format!("error: {e}"),
            };
            let _ = send_line(&mut conn, &reply);
        });
    }
}

/// Joins the VM's tap to the engine's interface in our network namespace, and has
/// the guest's NIC take its place.
/// Returns the engine's interface it joined, to be given back at the end.
fn connect_network(dir: &Path, channel: &Channel) -> Result<Option<u32>> {
    let Ok(tap) = std::fs::read_to_string(dir.join(TAP)) else {
        return Ok(None);
    };
    let (net, joined) = super::vm_net::connect(tap.trim())?;
    if let Err(e) = vm_relay::network(channel, &net) {
        if let Some(index) = joined {
            super::vm_net::disconnect(index);
        }
        return Err(e);
    }
    Ok(joined)
}

/// Only files named like an exec's, in the runtime dir itself.
fn name_is_an_exec(name: &str) -> bool {
    name.starts_with(EXEC_PREFIX) && !name.contains('/') && !name.contains("..")
}

/// Connects to the guest, has the container made, listens for `start`.
fn prepare(dir: &Path) -> Result<(Channel, std::os::unix::net::UnixListener)> {
    let relay = std::fs::read_to_string(dir.join(RELAY_PATH)).context(|| "read the relay path")?;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let stream = loop {
        match super::protocol::connect_long(Path::new(relay.trim())) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let _ = stream.set_read_timeout(Some(BOOT_TIMEOUT));
    let channel = Channel::new(stream)?;
    let setup: GuestSetup = read_json(&dir.join(GUEST_SETUP))?;
    vm_relay::setup(&channel, &setup)?;
    // The workload runs as long as it likes.
    channel.set_read_timeout(None)?;
    let listener = SocketDir::open(dir)?.bind(SOCKET)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join(SOCKET), std::fs::Permissions::from_mode(0o600))
        .context(|| "chmod holder socket")?;
    Ok((channel, listener))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let body = std::fs::read(path).context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&body).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

/// The workload's end as ours: its exit code, or its signal raised on ourselves (so
/// the engine sees the container killed by it), 128+n if that does not kill us.
fn end_as(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        return libc::WEXITSTATUS(status);
    }
    let sig = libc::WTERMSIG(status);
    // SAFETY: resetting a disposition and raising a signal on ourselves.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    128 + sig
}

/// Our terminal's size (stdin), if it is one.
fn window_size() -> Option<(u16, u16)> {
    window_size_at(0)
}

fn window_size_of(tty: &File) -> Option<(u16, u16)> {
    window_size_at(std::os::fd::AsRawFd::as_raw_fd(tty))
}

fn window_size_at(fd: i32) -> Option<(u16, u16)> {
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ into a local.
    (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0)
        .then_some((size.ws_row, size.ws_col))
}

/// How often an exec's terminal is checked for a new size: it is not our controlling
/// terminal, so no SIGWINCH tells us.
const RESIZE_POLL: Duration = Duration::from_millis(200);

/// Passes each new size of `tty` on as process `id`'s, until the flag returned is set.
fn follow_resizes(
    channel: &Channel,
    id: u32,
    tty: &File,
    mut last: Option<(u16, u16)>,
) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, channel) = (done.clone(), channel.clone());
    let Ok(tty) = tty.try_clone() else {
        return done;
    };
    std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(RESIZE_POLL);
            let now = window_size_of(&tty);
            if let Some((rows, cols)) = now.filter(|_| now != last) {
                last = now;
                if channel
                    .send(&Frame::Resize {
                        process: id,
                        rows,
                        cols,
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    done
}
