//! Line messages and fd passing over the holder's unix socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::error::{Error, IoContext, Result};

pub fn send_line(stream: &mut UnixStream, line: &str) -> Result<()> {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .context(|| "write to holder socket")
}

/// The longest line a peer may send: anything longer is cut off there.
const MAX_LINE: u64 = 4096;

/// One line, without its newline; `None` at EOF.
pub fn read_line(stream: &UnixStream) -> Result<Option<String>> {
    // Byte by byte: a buffered reader could swallow what follows (an fd message).
    let mut reader = BufReader::with_capacity(1, stream).take(MAX_LINE);
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .context(|| "read from holder socket")?;
    Ok((n > 0).then(|| line.trim_end_matches('\n').to_string()))
}

/// Sends `fds` in one SCM_RIGHTS message.
pub fn send_fds(stream: &UnixStream, fds: &[RawFd]) -> Result<()> {
    let iov = [std::io::IoSlice::new(b"f")];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .context(|| "send fds")?;
    Ok(())
}

/// A directory opened to reach sockets in it by a short name: `sun_path` holds 107
/// bytes, and runtime roots such as `/run/containerd/runc/k8s.io` with 64-hex ids are
/// longer than that.
pub struct SocketDir(std::fs::File);

impl SocketDir {
    pub fn open(dir: &std::path::Path) -> Result<SocketDir> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)
            .map(SocketDir)
            .context(|| format!("open {}", dir.display()))
    }

    /// `/proc/self/fd/N/NAME`, which names `dir/NAME` in at most a few dozen bytes.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        format!("/proc/self/fd/{}/{name}", self.0.as_raw_fd()).into()
    }

    pub fn bind(&self, name: &str) -> Result<std::os::unix::net::UnixListener> {
        std::os::unix::net::UnixListener::bind(self.path(name)).context(|| format!("bind {name}"))
    }

    pub fn connect(&self, name: &str) -> std::io::Result<UnixStream> {
        UnixStream::connect(self.path(name))
    }
}

/// Connects to a socket path of any length (an engine's console socket, say).
pub fn connect_long(path: &std::path::Path) -> Result<UnixStream> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return UnixStream::connect(path).context(|| format!("connect to {}", path.display()));
    };
    let parent = if parent.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        parent
    };
    SocketDir::open(parent)?
        .connect(&name.to_string_lossy())
        .context(|| format!("connect to {}", path.display()))
}

/// Accepts one connection, or fails after `timeout`.
pub fn accept_within(
    listener: &std::os::unix::net::UnixListener,
    timeout: std::time::Duration,
) -> Result<UnixStream> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
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

/// runc's `--pidfd-socket`: a pidfd of `pid`, sent to the socket at `path`.
pub fn send_pidfd(path: &std::path::Path, pid: i32) -> Result<()> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open(2) returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(Error::io("pidfd_open", std::io::Error::last_os_error()));
    }
    // SAFETY: the fd was just returned to us.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw as i32) };
    send_fds(&connect_long(path)?, &[pidfd.as_raw_fd()])
}

/// Receives up to `N` fds sent with [`send_fds`] (one message).
pub fn recv_fds<const N: usize>(stream: &UnixStream) -> Result<Vec<std::os::fd::OwnedFd>> {
    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    use std::os::fd::FromRawFd;
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; N]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context(|| "receive fds")?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().context(|| "receive fds")? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just gave us these fds.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(fds)
}
