//! The host's end of the framed channel into a VM guest (see `frames`): one process
//! started there, with the caller's stdin sent to it and its stdout and stderr
//! written to the caller's, until its exit, which is acknowledged so that the guest
//! may power off knowing nothing it sent is lost.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use super::frames::{self, Decoder, Frame};
use crate::error::{Error, Result};

/// Where a process's streams go on this side.
pub struct Stdio {
    /// None: the process gets an empty stdin (EOF at once).
    pub stdin: Option<File>,
    pub stdout: File,
    pub stderr: File,
}

/// Starts process `id` (`process` is its `Process` JSON) in the guest and relays its
/// streams; returns its wait status.
pub fn run(channel: &UnixStream, id: u32, process: &[u8], io: Stdio) -> Result<i32> {
    let writer = Arc::new(Mutex::new(
        channel
            .try_clone()
            .map_err(|e| Error::io("clone the relay", e))?,
    ));
    let send = |frame: &Frame| -> Result<()> {
        let mut w = writer
            .lock()
            .map_err(|_| Error::Usage("relay lock".into()))?;
        frames::write(&mut *w, frame).map_err(|e| Error::io("write the relay", e))
    };
    send(&Frame::Start {
        process: id,
        spec: process.to_vec(),
    })?;
    match io.stdin {
        None => send(&Frame::Eof { process: id, fd: 0 })?,
        Some(mut stdin) => {
            let writer = Arc::clone(&writer);
            // Ends with our stdin, or when the relay goes (the process is gone).
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    let frame = match stdin.read(&mut buf) {
                        Ok(0) | Err(_) => Frame::Eof { process: id, fd: 0 },
                        Ok(n) => Frame::Data {
                            process: id,
                            fd: 0,
                            bytes: buf[..n].to_vec(),
                        },
                    };
                    let last = matches!(frame, Frame::Eof { .. });
                    let sent = writer
                        .lock()
                        .map(|mut w| frames::write(&mut *w, &frame).is_ok())
                        .unwrap_or(false);
                    if last || !sent {
                        return;
                    }
                }
            });
        }
    }
    let (mut stdout, mut stderr) = (io.stdout, io.stderr);
    let mut reader = channel
        .try_clone()
        .map_err(|e| Error::io("clone the relay", e))?;
    let mut decoder = Decoder::default();
    loop {
        let frame = frames::read(&mut reader, &mut decoder)
            .map_err(|e| Error::io("read the relay", e))?
            .ok_or_else(|| Error::Usage("the VM went away before the process ended".into()))?;
        match frame {
            // A reader that went away loses the rest, as with a pipe.
            Frame::Data {
                process,
                fd: 1,
                bytes,
            } if process == id => {
                let _ = stdout.write_all(&bytes);
            }
            Frame::Data {
                process,
                fd: 2,
                bytes,
            } if process == id => {
                let _ = stderr.write_all(&bytes);
            }
            Frame::Error { text } => {
                return Err(Error::Usage(format!(
                    "in the VM: {}",
                    String::from_utf8_lossy(&text)
                )));
            }
            Frame::Exit { process, status } if process == id => {
                send(&Frame::Ack { process: id })?;
                return Ok(status);
            }
            _ => {}
        }
    }
}

/// Tells the guest how to make the container; before the first process starts.
pub fn setup(channel: &UnixStream, setup: &super::guest::GuestSetup) -> Result<()> {
    let spec = serde_json::to_vec(setup).map_err(|e| Error::Usage(e.to_string()))?;
    let mut w = channel;
    frames::write(&mut w, &Frame::Setup { spec }).map_err(|e| Error::io("write the relay", e))
}
