//! Line messages and fd passing over the holder's unix socket.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::error::{Error, IoContext, Result};

pub fn send_line(stream: &mut UnixStream, line: &str) -> Result<()> {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .context(|| "write to holder socket")
}

/// One line, without its newline; `None` at EOF.
pub fn read_line(stream: &UnixStream) -> Result<Option<String>> {
    // Byte by byte: a buffered reader could swallow what follows (an fd message).
    let mut reader = BufReader::with_capacity(1, stream);
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

/// Receives exactly `count` fds sent by [`send_fds`].
pub fn recv_fds(stream: &UnixStream, count: usize) -> Result<Vec<OwnedFd>> {
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
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
            // SAFETY: the kernel just installed these fds for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if fds.len() != count {
        return Err(Error::Usage(format!(
            "expected {count} fds from the holder, got {}",
            fds.len()
        )));
    }
    Ok(fds)
}
