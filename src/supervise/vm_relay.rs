//! The host's end of the framed channel into a VM guest (see `frames`): the
//! container's setup, acknowledged; then one process started there, with the caller's
//! stdin sent to it and its stdout and stderr written to the caller's, until its exit,
//! which is acknowledged so that the guest may power off knowing nothing it sent is
//! lost. Signals for the process go on the same channel, from another thread.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use super::frames::{self, Decoder, Frame};
use crate::error::{Error, Result};

/// The process ids the guest acknowledges a setup and a network with.
pub const SETUP_DONE: u32 = u32::MAX;
pub const NETWORK_DONE: u32 = u32::MAX - 1;
/// A signal for this process id goes to every process in the guest but its init.
pub const ALL_PROCESSES: u32 = u32::MAX;

/// What `Start` carries: the spec's process, and the seccomp filter compiled on the
/// host (`seccomp::Program` bytes), which the guest loads last, as runc does.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct GuestProcess {
    pub process: oci_spec::runtime::Process,
    #[serde(default)]
    pub seccomp: Option<Vec<u8>>,
    /// With a terminal: its size (rows, columns) to start with.
    #[serde(default)]
    pub window: Option<(u16, u16)>,
}

type Routes = Arc<Mutex<Option<HashMap<u32, Sender<Result<Frame>>>>>>;

/// One connection to the guest: frames are written whole, from any thread; once
/// `dispatch` runs, what the guest sends goes to the process it names.
#[derive(Clone)]
pub struct Channel {
    writer: Arc<Mutex<UnixStream>>,
    reader: Arc<Mutex<(UnixStream, Decoder)>>,
    /// None once the guest has gone: nothing more will come.
    routes: Routes,
    dispatching: Arc<std::sync::atomic::AtomicBool>,
}

impl Channel {
    pub fn new(stream: UnixStream) -> Result<Channel> {
        let reader = stream
            .try_clone()
            .map_err(|e| Error::io("clone the relay", e))?;
        Ok(Channel {
            writer: Arc::new(Mutex::new(stream)),
            reader: Arc::new(Mutex::new((reader, Decoder::default()))),
            routes: Arc::new(Mutex::new(Some(HashMap::new()))),
            dispatching: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// Reads frames from here on in a thread of its own, each to its process's
    /// `run`; when the guest goes (or says why it cannot go on), every one hears it.
    pub fn dispatch(&self) {
        self.dispatching
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let channel = self.clone();
        std::thread::spawn(move || {
            loop {
                let next = channel.next();
                let Ok(mut routes) = channel.routes.lock() else {
                    return;
                };
                match next {
                    Ok(frame) => {
                        let id = match &frame {
                            Frame::Data { process, .. }
                            | Frame::Exit { process, .. }
                            | Frame::Eof { process, .. }
                            | Frame::Processes { process, .. } => *process,
                            _ => continue,
                        };
                        if let Some(tx) = routes.as_ref().and_then(|r| r.get(&id)) {
                            let _ = tx.send(Ok(frame));
                        }
                    }
                    Err(e) => {
                        for (_, tx) in routes.take().into_iter().flatten() {
                            let _ = tx.send(Err(Error::Usage(e.to_string())));
                        }
                        return;
                    }
                }
            }
        });
    }

    /// Where frames of process `id` come to, once `dispatch` runs.
    fn route(&self, id: u32) -> Result<Receiver<Result<Frame>>> {
        let (tx, rx) = channel();
        let mut routes = self
            .routes
            .lock()
            .map_err(|_| Error::Usage("relay lock".into()))?;
        routes
            .as_mut()
            .ok_or_else(|| Error::Usage("the VM went away".into()))?
            .insert(id, tx);
        Ok(rx)
    }

    fn dispatching(&self) -> bool {
        self.dispatching.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> Result<()> {
        let guard = self
            .reader
            .lock()
            .map_err(|_| Error::Usage("relay lock".into()))?;
        guard
            .0
            .set_read_timeout(timeout)
            .map_err(|e| Error::io("relay timeout", e))
    }

    pub fn send(&self, frame: &Frame) -> Result<()> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| Error::Usage("relay lock".into()))?;
        frames::write(&mut *w, frame).map_err(|e| Error::io("write the relay", e))
    }

    /// The next frame; an error if the guest is gone, or says why it cannot go on.
    fn next(&self) -> Result<Frame> {
        let mut guard = self
            .reader
            .lock()
            .map_err(|_| Error::Usage("relay lock".into()))?;
        let (stream, decoder) = &mut *guard;
        match frames::read(stream, decoder).map_err(|e| Error::io("read the relay", e))? {
            Some(Frame::Error { text }) => Err(Error::Usage(format!(
                "in the VM: {}",
                String::from_utf8_lossy(&text)
            ))),
            Some(frame) => Ok(frame),
            None => Err(Error::Usage("the VM went away".into())),
        }
    }
}

/// Where a process's streams go on this side.
pub struct Stdio {
    /// None: the process gets an empty stdin (EOF at once).
    pub stdin: Option<File>,
    pub stdout: File,
    pub stderr: File,
}

/// Tells the guest how to make the container, and waits until it has.
pub fn setup(channel: &Channel, setup: &super::guest::GuestSetup) -> Result<()> {
    let spec = serde_json::to_vec(setup).map_err(|e| Error::Usage(e.to_string()))?;
    handshake(channel, &Frame::Setup { spec }, SETUP_DONE)
}

/// Tells the guest what its NICs become, and waits until they are.
pub fn network(channel: &Channel, net: &super::vm_net::NetSetup) -> Result<()> {
    let spec = serde_json::to_vec(net).map_err(|e| Error::Usage(e.to_string()))?;
    handshake(channel, &Frame::Network { spec }, NETWORK_DONE)
}

/// Sends `frame` (before `dispatch` runs) and waits for the guest's ack `done`.
fn handshake(channel: &Channel, frame: &Frame, done: u32) -> Result<()> {
    channel.send(frame)?;
    loop {
        if let Frame::Ack { process } = channel.next()?
            && process == done
        {
            return Ok(());
        }
    }
}

/// The container's processes, asked for under request id `id` (one no process has).
/// `dispatch` must run.
pub fn processes(channel: &Channel, id: u32) -> Result<Vec<super::guest_ps::GuestProcessInfo>> {
    let rx = channel.route(id)?;
    let unroute = || {
        if let Ok(mut routes) = channel.routes.lock()
            && let Some(r) = routes.as_mut()
        {
            r.remove(&id);
        }
    };
    let answer = channel.send(&Frame::Ps { process: id }).and_then(|()| {
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .map_err(|_| Error::Usage("the VM did not list its processes".into()))
    });
    unroute();
    match answer?? {
        Frame::Processes { list, .. } => {
            serde_json::from_slice(&list).map_err(|e| Error::Usage(format!("processes: {e}")))
        }
        _ => Err(Error::Usage("the VM did not list its processes".into())),
    }
}

/// Starts process `id` in the guest and relays its streams; returns its wait status.
/// Frames come through `dispatch` (running already), or, if it does not run, straight
/// from the channel (one process at a time).
pub fn run(channel: &Channel, id: u32, process: &GuestProcess, io: Stdio) -> Result<i32> {
    let spec = serde_json::to_vec(process).map_err(|e| Error::Usage(e.to_string()))?;
    let routed = if channel.dispatching() {
        Some(channel.route(id)?)
    } else {
        None
    };
    let next = || -> Result<Frame> {
        match &routed {
            Some(rx) => rx
                .recv()
                .map_err(|_| Error::Usage("the VM went away".into()))?,
            None => channel.next(),
        }
    };
    channel.send(&Frame::Start { process: id, spec })?;
    match io.stdin {
        None => channel.send(&Frame::Eof { process: id, fd: 0 })?,
        Some(mut stdin) => {
            let channel = channel.clone();
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
                    if channel.send(&frame).is_err() || last {
                        return;
                    }
                }
            });
        }
    }
    let (mut stdout, mut stderr) = (io.stdout, io.stderr);
    loop {
        match next()? {
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
            Frame::Exit { process, status } if process == id => {
                channel.send(&Frame::Ack { process: id })?;
                if let Ok(mut routes) = channel.routes.lock()
                    && let Some(r) = routes.as_mut()
                {
                    r.remove(&id);
                }
                return Ok(status);
            }
            _ => {}
        }
    }
}
