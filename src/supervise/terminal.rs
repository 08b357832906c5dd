//! A container's terminal, made as runc makes it: a pty of the container's own devpts
//! (so `ttyname()` and `/dev/pts/N` work inside), whose master goes to the engine's
//! console socket and whose slave becomes the process's stdio and controlling
//! terminal. The socket is connected on the host; the pty is opened inside.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use super::protocol::send_fds;
use crate::error::{IoContext, Result};

/// Opens a pty in the current mount namespace's `/dev/ptmx`, sends its master to
/// `console` (one SCM_RIGHTS message, as runc sends it) and makes the slave our
/// stdin, stdout and stderr.
pub fn attach(console: &UnixStream) -> Result<()> {
    let pty = nix::pty::openpty(None, None).context(|| "open a pty in the container")?;
    send_fds(console, &[pty.master.as_raw_fd()])?;
    become_stdio(&pty.slave)
}

fn become_stdio(slave: &OwnedFd) -> Result<()> {
    nix::unistd::dup2_stdin(slave)
        .and_then(|()| nix::unistd::dup2_stdout(slave))
        .and_then(|()| nix::unistd::dup2_stderr(slave))
        .context(|| "make the pty our stdio")
}

/// Our own terminal in raw mode while a process in a guest uses it (its pty does the
/// line discipline, as runc sets the host console raw); put back as it was on drop.
pub struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    /// None if stdin is no terminal.
    pub fn enter() -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}
