//! What nexcage must hand to the delegate untouched: preserved fds, the console
//! socket (pty master by SCM_RIGHTS), and the exit status of the workload.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;

use common::{Bundle, Env, unique};

#[test]
fn preserved_fds_reach_the_container_and_nothing_else_does() {
    let env = Env::two_backends();
    for id in [unique("fds"), unique("r-fds")] {
        let bundle = Bundle::new(&["sh", "-c", "echo via-fd3 >&3; ls /proc/self/fd"]);
        let (mut reader, writer) = std::io::pipe().unwrap();
        let writer_fd = writer.as_raw_fd();
        let mut cmd = env.cmd();
        cmd.args(["run", "--preserve-fds", "1", "--bundle", bundle.path(), &id]);
        // SAFETY: dup2 is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(writer_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        drop(writer);
        assert!(out.status.success(), "{}", common::stderr(&out));
        let mut via = String::new();
        reader.read_to_string(&mut via).unwrap();
        assert_eq!(via, "via-fd3\n");
        // 0-2, fd 3, and the one ls opens for /proc/self/fd: no runtime fd leaked in.
        let fds: Vec<&str> = common::stdout(&out).leak().lines().collect();
        assert_eq!(fds, ["0", "1", "2", "3", "4"], "{id}");
    }
    env.ok(&["list"]);
    env.assert_clean();
}

/// Receives one fd by SCM_RIGHTS, as conmon and containerd do.
fn receive_fd(listener: &UnixListener) -> OwnedFd {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    let fds: Vec<_> = msg
        .cmsgs()
        .unwrap()
        .filter_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => Some(fds),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(fds.len(), 1, "exactly one fd, as go-runc demands");
    // SAFETY: the fd was just received and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fds[0]) }
}

#[test]
fn console_socket_gets_the_pty_master() {
    let env = Env::two_backends();
    for id in [unique("tty"), unique("r-tty")] {
        let bundle = Bundle::with(&["sh", "-c", "read line; echo got:$line; tty"], |s| {
            if let Some(p) = s.process_mut() {
                p.set_terminal(Some(true));
            }
        });
        let sock_dir = tempfile::tempdir().unwrap();
        let sock = sock_dir.path().join("console.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let receiver = std::thread::spawn(move || receive_fd(&listener));
        env.detached(&[
            "create",
            "--console-socket",
            sock.to_str().unwrap(),
            "--bundle",
            bundle.path(),
            &id,
        ]);
        let master = std::fs::File::from(receiver.join().unwrap());
        env.ok(&["start", &id]);
        (&master).write_all(b"hello\n").unwrap();
        let mut seen = String::new();
        let mut chunk = [0u8; 1024];
        while !seen.contains("/dev/pts/") {
            match (&master).read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
        assert!(seen.contains("got:hello"), "{id}: {seen:?}");
        assert!(seen.contains("/dev/pts/0"), "{id}: {seen:?}");
        env.wait_status(&id, "stopped");
        env.ok(&["delete", &id]);
    }
    env.assert_clean();
}
