//! The fuzzer's side of the socket: raw bytes out (so it can send anything), acks, NAKs and
//! whole packets in, every read bounded by a deadline, and a log of what was sent for the
//! reproducers.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Why a read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Nothing arrived before the deadline.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The stub closed the connection.
    #[error("the stub closed the connection")]
    Closed,
    /// The socket failed otherwise.
    #[error("socket error")]
    Io(#[source] std::io::Error),
    /// The stub sent something that is not an ack, a NAK or a well-formed packet.
    #[error("malformed reply: {0}")]
    Malformed(String),
}

/// One thing the stub sent (RSP manual, "Overview": packets, `+` and `-`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `+`.
    Ack,
    /// `-`: the stub asks for a retransmission.
    Nak,
    /// A packet's data, run-length decoded.
    Packet(Vec<u8>),
}

/// One client connection.
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// True until QStartNoAckMode is accepted: received packets are acknowledged.
    pub ack: bool,
    /// Everything written since [`Wire::take_log`].
    log: Vec<u8>,
}

/// The checksum of a packet's data (modulo-256 sum).
pub fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

/// `$data#cs`.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 4);
    out.push(b'$');
    out.extend_from_slice(data);
    out.extend_from_slice(format!("#{:02x}", checksum(data)).as_bytes());
    out
}

impl Wire {
    /// Wraps a connected socket (ack mode, as every session starts).
    pub fn new(stream: TcpStream) -> Result<Wire, WireError> {
        stream.set_nodelay(true).map_err(WireError::Io)?;
        Ok(Wire {
            stream,
            buf: vec![0; 64 * 1024],
            pos: 0,
            end: 0,
            ack: true,
            log: Vec::new(),
        })
    }

    /// Writes raw bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.log.extend_from_slice(bytes);
        match self.stream.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e) if is_closed(&e) => Err(WireError::Closed),
            Err(e) => Err(WireError::Io(e)),
        }
    }

    /// Writes one well-framed packet.
    pub fn write_packet(&mut self, data: &[u8]) -> Result<(), WireError> {
        self.write(&frame(data))
    }

    /// The bytes written since the last call.
    pub fn take_log(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.log)
    }

    /// Bytes already received and not yet consumed.
    pub fn pending(&self) -> usize {
        self.end - self.pos
    }

    /// The next event, acknowledging a packet in ack mode. Bytes between events that are
    /// none of `+`, `-` or `$` are a protocol error of the stub.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Event, WireError> {
        let deadline = Instant::now() + timeout;
        let b = self.byte(deadline, timeout)?;
        match b {
            b'+' => return Ok(Event::Ack),
            b'-' => return Ok(Event::Nak),
            b'$' => {}
            other => return Err(WireError::Malformed(format!("stray byte {other:#04x}"))),
        }
        let mut data = Vec::new();
        loop {
            let b = self.byte(deadline, timeout)?;
            if b == b'#' {
                break;
            }
            data.push(b);
        }
        let hi = self.byte(deadline, timeout)?;
        let lo = self.byte(deadline, timeout)?;
        let sum = std::str::from_utf8(&[hi, lo])
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if sum != Some(checksum(&data)) {
            return Err(WireError::Malformed(format!(
                "bad checksum {:?} on {}",
                String::from_utf8_lossy(&[hi, lo]),
                crate::fuzz::escape(&data)
            )));
        }
        if self.ack {
            self.write(b"+")?;
        }
        if data.contains(&b'*') {
            data = crate::rsp::run_length_decode(&data)
                .map_err(|e| WireError::Malformed(e.to_string()))?;
        }
        Ok(Event::Packet(data))
    }

    /// The next packet; acks are skipped, a NAK is an error (only junk earns one).
    pub fn next_packet(&mut self, timeout: Duration) -> Result<Vec<u8>, WireError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                Event::Ack => continue,
                Event::Nak => return Err(WireError::Malformed("unexpected `-`".into())),
                Event::Packet(p) => return Ok(p),
            }
        }
    }

    /// Whether a byte arrives within `wait` (it stays buffered).
    pub fn quiet_for(&mut self, wait: Duration) -> Result<bool, WireError> {
        if self.pending() > 0 {
            return Ok(false);
        }
        match self.refill(Instant::now() + wait, wait) {
            Ok(()) => Ok(false),
            Err(WireError::Timeout(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    fn byte(&mut self, deadline: Instant, timeout: Duration) -> Result<u8, WireError> {
        if self.pos >= self.end {
            self.refill(deadline, timeout)?;
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    fn refill(&mut self, deadline: Instant, timeout: Duration) -> Result<(), WireError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WireError::Timeout(timeout));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(WireError::Io)?;
            match self.stream.read(&mut self.buf) {
                Ok(0) => return Err(WireError::Closed),
                Ok(n) => {
                    self.pos = 0;
                    self.end = n;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue;
                }
                Err(e) if is_closed(&e) => return Err(WireError::Closed),
                Err(e) => return Err(WireError::Io(e)),
            }
        }
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}
