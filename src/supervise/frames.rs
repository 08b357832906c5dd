//! The one framed channel between the holder on the host and nexcage's init in a VM
//! guest (fds cannot cross a VM boundary): every stream of every process rides on
//! it, each frame naming its process and fd. One channel, because virtio-serial keeps
//! no order across ports and allows one opener per port; explicit EOF and an
//! acknowledged exit, because a port's close reaches the host as nothing, and QEMU
//! drops what the host has not read when it disconnects.
//!
//! Wire format, big-endian: `len: u32` (of what follows), `kind: u8`, `process: u32`,
//! `fd: u8`, payload (`len - 6` bytes, at most [`MAX_PAYLOAD`]).

use std::io::{self, Read, Write};

/// A payload's upper bound; a larger frame is a broken or hostile peer.
pub const MAX_PAYLOAD: usize = 1 << 20;
const HEADER: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Start process `process`: the payload is its description (JSON).
    Start { process: u32, spec: Vec<u8> },
    /// Bytes of one of a process's streams: stdin towards the guest, stdout (1) and
    /// stderr (2) towards the host.
    Data {
        process: u32,
        fd: u8,
        bytes: Vec<u8>,
    },
    /// That stream has ended.
    Eof { process: u32, fd: u8 },
    /// Deliver a signal to the process.
    Signal { process: u32, signal: i32 },
    /// The process ended: its wait status, as waitpid gives it.
    Exit { process: u32, status: i32 },
    /// The host has what the guest sent up to and including the exit of `process`.
    Ack { process: u32 },
    /// Before the first start: how the guest makes the container (JSON, see
    /// `guest::GuestSetup`).
    Setup { spec: Vec<u8> },
    /// The guest cannot go on (its last word before it powers off).
    Error { text: Vec<u8> },
    /// The terminal of a process with one has a new size.
    Resize { process: u32, rows: u16, cols: u16 },
    /// At start, before the workload: what the guest's NICs become (JSON, see
    /// `vm_net::NetSetup`).
    Network { spec: Vec<u8> },
    /// List the container's processes; the answer is `Processes` with this id.
    Ps { process: u32 },
    /// The container's processes (JSON, see `guest_ps::GuestProcessInfo`).
    Processes { process: u32, list: Vec<u8> },
}

impl Frame {
    fn parts(&self) -> (u8, u32, u8, std::borrow::Cow<'_, [u8]>) {
        use std::borrow::Cow::{Borrowed, Owned};
        match self {
            Frame::Start { process, spec } => (1, *process, 0, Borrowed(spec)),
            Frame::Data { process, fd, bytes } => (2, *process, *fd, Borrowed(bytes)),
            Frame::Eof { process, fd } => (3, *process, *fd, Borrowed(&[])),
            Frame::Signal { process, signal } => {
                (4, *process, 0, Owned(signal.to_be_bytes().to_vec()))
            }
            Frame::Exit { process, status } => {
                (5, *process, 0, Owned(status.to_be_bytes().to_vec()))
            }
            Frame::Ack { process } => (6, *process, 0, Borrowed(&[])),
            Frame::Setup { spec } => (7, 0, 0, Borrowed(spec)),
            Frame::Error { text } => (8, 0, 0, Borrowed(text)),
            Frame::Resize {
                process,
                rows,
                cols,
            } => {
                let mut size = rows.to_be_bytes().to_vec();
                size.extend_from_slice(&cols.to_be_bytes());
                (9, *process, 0, Owned(size))
            }
            Frame::Network { spec } => (10, 0, 0, Borrowed(spec)),
            Frame::Ps { process } => (11, *process, 0, Borrowed(&[])),
            Frame::Processes { process, list } => (12, *process, 0, Borrowed(list)),
        }
    }

    /// The frame as it goes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, process, fd, payload) = self.parts();
        let mut out = Vec::with_capacity(4 + HEADER + payload.len());
        out.extend_from_slice(&((HEADER + payload.len()) as u32).to_be_bytes());
        out.push(kind);
        out.extend_from_slice(&process.to_be_bytes());
        out.push(fd);
        out.extend_from_slice(&payload);
        out
    }

    /// One frame from its wire bytes after the length.
    fn decode(body: &[u8]) -> io::Result<Frame> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        if body.len() < HEADER {
            return Err(bad("short frame"));
        }
        let kind = body[0];
        let process = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
        let fd = body[5];
        let payload = &body[HEADER..];
        let int = || -> io::Result<i32> {
            let bytes: [u8; 4] = payload.try_into().map_err(|_| bad("bad integer"))?;
            Ok(i32::from_be_bytes(bytes))
        };
        Ok(match kind {
            1 => Frame::Start {
                process,
                spec: payload.to_vec(),
            },
            2 => Frame::Data {
                process,
                fd,
                bytes: payload.to_vec(),
            },
            3 => Frame::Eof { process, fd },
            4 => Frame::Signal {
                process,
                signal: int()?,
            },
            5 => Frame::Exit {
                process,
                status: int()?,
            },
            6 => Frame::Ack { process },
            7 => Frame::Setup {
                spec: payload.to_vec(),
            },
            8 => Frame::Error {
                text: payload.to_vec(),
            },
            9 => {
                let size: [u8; 4] = payload.try_into().map_err(|_| bad("bad size"))?;
                Frame::Resize {
                    process,
                    rows: u16::from_be_bytes([size[0], size[1]]),
                    cols: u16::from_be_bytes([size[2], size[3]]),
                }
            }
            10 => Frame::Network {
                spec: payload.to_vec(),
            },
            11 => Frame::Ps { process },
            12 => Frame::Processes {
                process,
                list: payload.to_vec(),
            },
            _ => return Err(bad("unknown frame kind")),
        })
    }
}

/// Writes one frame; one the peer would refuse as too big is an error here instead.
pub fn write(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let bytes = frame.encode();
    if bytes.len() > 4 + HEADER + MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes", bytes.len()),
        ));
    }
    w.write_all(&bytes)
}

/// Reassembles frames from bytes as they come (a port gives them in any pieces).
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if there is one.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        let Some(len) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if !(HEADER..=HEADER + MAX_PAYLOAD).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes"),
            ));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = Frame::decode(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        frame.map(Some)
    }
}

/// Blocking read of one frame; `None` at a clean end of the stream.
pub fn read(r: &mut impl Read, decoder: &mut Decoder) -> io::Result<Option<Frame>> {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(Some(frame));
        }
        let n = r.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        decoder.push(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_any_pieces() {
        let frames = vec![
            Frame::Start {
                process: 0,
                spec: br#"{"args":["true"]}"#.to_vec(),
            },
            Frame::Data {
                process: 7,
                fd: 2,
                bytes: vec![0, 255, 10],
            },
            Frame::Eof { process: 7, fd: 0 },
            Frame::Signal {
                process: 7,
                signal: 15,
            },
            Frame::Exit {
                process: 7,
                status: 3 << 8,
            },
            Frame::Ack { process: 7 },
            Frame::Setup {
                spec: b"{}".to_vec(),
            },
            Frame::Error {
                text: b"no rootfs".to_vec(),
            },
            Frame::Resize {
                process: 3,
                rows: 24,
                cols: 80,
            },
            Frame::Network {
                spec: br#"{"links":[]}"#.to_vec(),
            },
            Frame::Ps { process: 9 },
            Frame::Processes {
                process: 9,
                list: b"[]".to_vec(),
            },
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for piece in [1, 3, 7, wire.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(piece) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "pieces of {piece}");
        }
    }

    #[test]
    fn hostile_lengths_and_kinds_are_errors() {
        let mut d = Decoder::default();
        d.push(&u32::MAX.to_be_bytes());
        assert!(d.next_frame().is_err());
        let mut d = Decoder::default();
        d.push(&[0, 0, 0, 6, 99, 0, 0, 0, 0, 0]);
        assert!(d.next_frame().is_err());
        let mut d = Decoder::default();
        d.push(&[0, 0, 0, 7, 5, 0, 0, 0, 0, 0, 1]);
        assert!(d.next_frame().is_err(), "an exit status of one byte");
    }
}
