//! A small gdb Remote Serial Protocol client: just enough of what gdb itself sends to time a
//! stub's stops, in ack and no-ack mode.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Errors talking to a stub.
#[derive(Debug, thiserror::Error)]
pub enum RspError {
    /// The socket failed (including a read timeout).
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
    /// The stub closed the connection.
    #[error("the stub closed the connection")]
    Closed,
    /// A reply was malformed, or not the reply the request needs.
    #[error("{0}")]
    Protocol(String),
}

type Result<T> = std::result::Result<T, RspError>;

/// gdb's Ctrl-C: a raw 0x03 byte outside any packet.
const INTERRUPT: u8 = 0x03;

/// How a resumed target stopped (the stop-reply packets, gdb manual E.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `S`/`T` packet: stopped with this signal; the whole packet for diagnostics.
    Signal(u8, String),
    /// `W`: the program exited with this status.
    Exited(u8),
    /// `X`: the program was terminated by this signal.
    Terminated(u8),
}

impl Stop {
    /// The signal, or None for an exit.
    pub fn signal(&self) -> Option<u8> {
        match self {
            Stop::Signal(s, _) => Some(*s),
            _ => None,
        }
    }
}

impl Stop {
    /// The thread a `T` stop reply names (`thread:p1.3;` or `thread:3;`), if any.
    pub fn thread(&self) -> Option<u64> {
        let Stop::Signal(_, p) = self else {
            return None;
        };
        let field = p
            .get(3..)?
            .split(';')
            .find_map(|f| f.strip_prefix("thread:"))?;
        let tid = field.rsplit('.').next()?;
        u64::from_str_radix(tid, 16).ok()
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Signal(s, p) => write!(f, "signal {s} ({p})"),
            Stop::Exited(c) => write!(f, "exited with status {c}"),
            Stop::Terminated(s) => write!(f, "terminated by signal {s}"),
        }
    }
}

/// One connection to a stub.
pub struct Client {
    stream: TcpStream,
    /// Bytes read but not yet consumed: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// True until QStartNoAckMode has been accepted.
    ack: bool,
    out: Vec<u8>,
    /// The stub's PacketSize from qSupported (bytes of packet data).
    pub packet_size: usize,
    /// The stub's qSupported reply.
    pub features: String,
}

/// What to ask for in qSupported: gdb 13's own set, minus the events this client ignores.
const QSUPPORTED: &str = "qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+;no-resumed+";

impl Client {
    /// Wraps a connected socket; the conversation starts in ack mode.
    pub fn new(stream: TcpStream, timeout: Duration) -> Result<Client> {
        stream
            .set_nodelay(true)
            .map_err(|e| RspError::Io("cannot set TCP_NODELAY", e))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| RspError::Io("cannot set a read timeout", e))?;
        Ok(Client {
            stream,
            buf: vec![0; 256 * 1024],
            pos: 0,
            end: 0,
            ack: true,
            out: Vec::with_capacity(256),
            packet_size: 0,
            features: String::new(),
        })
    }

    /// Sets how long a reply may take before the run fails.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| RspError::Io("cannot set a read timeout", e))
    }

    /// True while packets are acknowledged.
    pub fn ack_mode(&self) -> bool {
        self.ack
    }

    /// gdb's opening: qSupported, then QStartNoAckMode when `no_ack` and the stub offers
    /// it. Returns whether no-ack mode is on.
    pub fn handshake(&mut self, no_ack: bool) -> Result<bool> {
        let reply = self.request_text(QSUPPORTED.as_bytes())?;
        self.packet_size = reply
            .split(';')
            .find_map(|f| f.strip_prefix("PacketSize="))
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| {
                RspError::Protocol(format!("qSupported reply without PacketSize: {reply}"))
            })?;
        let offers_no_ack = reply.split(';').any(|f| f == "QStartNoAckMode+");
        self.features = reply;
        if no_ack && offers_no_ack {
            self.expect_ok(b"QStartNoAckMode")?;
            self.ack = false;
        }
        Ok(!self.ack)
    }

    /// The `<architecture>` of the stub's target description (qXfer:features:read), or
    /// None if it offers none.
    pub fn architecture(&mut self) -> Result<Option<String>> {
        if !self.features.contains("qXfer:features:read+") {
            return Ok(None);
        }
        let mut xml = Vec::new();
        let mut chunk = Vec::new();
        loop {
            let req = format!("qXfer:features:read:target.xml:{:x},ffb", xml.len());
            self.send(req.as_bytes())?;
            self.recv_into(&mut chunk)?;
            match chunk.split_first() {
                Some((b'm', data)) => xml.extend_from_slice(data),
                Some((b'l', data)) => {
                    xml.extend_from_slice(data);
                    break;
                }
                _ => return Ok(None),
            }
        }
        let xml = String::from_utf8_lossy(&xml);
        Ok(xml
            .split("<architecture>")
            .nth(1)
            .and_then(|rest| rest.split("</architecture>").next())
            .map(|a| a.trim().to_string()))
    }

    /// Sends one packet (and in ack mode waits for its `+`).
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        self.out.clear();
        self.out.push(b'$');
        self.out.extend_from_slice(data);
        let sum = data.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        self.out.push(b'#');
        self.out.extend_from_slice(&hex2(sum));
        loop {
            self.stream
                .write_all(&self.out)
                .map_err(|e| RspError::Io("cannot send a packet", e))?;
            if !self.ack {
                return Ok(());
            }
            match self.wait_ack()? {
                b'+' => return Ok(()),
                b'-' => continue,
                other => {
                    return Err(RspError::Protocol(format!(
                        "expected an ack, got byte {other:#04x}"
                    )));
                }
            }
        }
    }

    /// The next `+` or `-`. A packet that arrives first (QEMU sends a stale stop reply to
    /// a client that connects while the VM runs) is acknowledged and dropped.
    fn wait_ack(&mut self) -> Result<u8> {
        loop {
            match self.next_byte()? {
                b'$' => {
                    self.pos -= 1;
                    let stray = self.recv()?;
                    log::info!(
                        "dropped a packet before an ack: {}",
                        String::from_utf8_lossy(&stray)
                    );
                }
                b => return Ok(b),
            }
        }
    }

    /// Sends gdb's interrupt byte.
    pub fn interrupt(&mut self) -> Result<()> {
        self.stream
            .write_all(&[INTERRUPT])
            .map_err(|e| RspError::Io("cannot send the interrupt byte", e))
    }

    /// Receives one packet into `out` (replacing its contents), run-length decoded.
    pub fn recv_into(&mut self, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        // Skip acks and anything else before the packet start.
        loop {
            if self.next_byte()? == b'$' {
                break;
            }
        }
        let mut sum = 0u8;
        loop {
            self.fill()?;
            let start = self.pos;
            let hash = self.buf[start..self.end].iter().position(|&b| b == b'#');
            let end = hash.map_or(self.end, |i| start + i);
            let chunk = &self.buf[start..end];
            sum = chunk.iter().fold(sum, |s, &b| s.wrapping_add(b));
            out.extend_from_slice(chunk);
            self.pos = end;
            if hash.is_some() {
                self.pos += 1; // the '#'
                break;
            }
        }
        let hi = self.next_byte()?;
        let lo = self.next_byte()?;
        let want = unhex_byte(hi, lo)
            .ok_or_else(|| RspError::Protocol("malformed packet checksum".into()))?;
        if want != sum {
            return Err(RspError::Protocol(format!(
                "packet checksum {want:#04x}, computed {sum:#04x}"
            )));
        }
        if out.contains(&b'*') {
            *out = run_length_decode(out)?;
        }
        if self.ack {
            self.stream
                .write_all(b"+")
                .map_err(|e| RspError::Io("cannot send an ack", e))?;
        }
        Ok(())
    }

    /// Receives one packet.
    pub fn recv(&mut self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.recv_into(&mut v)?;
        Ok(v)
    }

    /// Sends a packet and returns the reply as text.
    pub fn request_text(&mut self, data: &[u8]) -> Result<String> {
        self.send(data)?;
        let r = self.recv()?;
        Ok(String::from_utf8_lossy(&r).into_owned())
    }

    /// Sends a packet whose only good reply is `OK`.
    pub fn expect_ok(&mut self, data: &[u8]) -> Result<()> {
        let r = self.request_text(data)?;
        if r != "OK" {
            return Err(RspError::Protocol(format!(
                "{} answered {r:?}, not OK",
                String::from_utf8_lossy(data)
            )));
        }
        Ok(())
    }

    /// Waits for a stop reply (console `O` packets are skipped).
    pub fn wait_stop(&mut self) -> Result<Stop> {
        loop {
            let p = self.recv()?;
            if let Some(stop) = parse_stop(&p)? {
                return Ok(stop);
            }
        }
    }

    /// Sends a resume packet and waits for the stop.
    pub fn resume(&mut self, data: &[u8]) -> Result<Stop> {
        self.send(data)?;
        self.wait_stop()
    }

    /// Reads all registers (`g`), decoded from hex into `out`.
    pub fn read_registers(&mut self, scratch: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<()> {
        self.send(b"g")?;
        self.recv_into(scratch)?;
        if scratch.first() == Some(&b'E') && scratch.len() == 3 {
            return Err(RspError::Protocol(format!(
                "g answered {}",
                String::from_utf8_lossy(scratch)
            )));
        }
        decode_hex(scratch, out)
    }

    /// Reads `len` bytes at `addr` with `m` packets no larger than the stub's PacketSize
    /// allows (as gdb does: PacketSize/2 bytes per packet), appending them to `out`.
    pub fn read_memory(
        &mut self,
        addr: u64,
        len: usize,
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let max = (self.packet_size / 2).max(1);
        let mut done = 0usize;
        let mut cmd = Vec::with_capacity(32);
        while done < len {
            let n = max.min(len - done);
            cmd.clear();
            write!(cmd, "m{:x},{:x}", addr + done as u64, n)
                .map_err(|e| RspError::Io("format", e))?;
            self.send(&cmd)?;
            self.recv_into(scratch)?;
            if scratch.is_empty() || (scratch[0] == b'E' && scratch.len() == 3) {
                return Err(RspError::Protocol(format!(
                    "m{:x},{n:x} answered {:?}",
                    addr + done as u64,
                    String::from_utf8_lossy(scratch)
                )));
            }
            let before = out.len();
            decode_hex(scratch, out)?;
            let got = out.len() - before;
            if got > n {
                return Err(RspError::Protocol(format!(
                    "m asked for {n} bytes, got {got}"
                )));
            }
            done += got;
        }
        Ok(())
    }

    /// Waits up to `timeout` for input from the stub (already buffered, or on the socket);
    /// returns whether there is some. Uses ppoll(2), so sub-millisecond waits are honoured
    /// (to the calling thread's timer slack).
    pub fn wait_readable(&mut self, timeout: Duration) -> Result<bool> {
        if self.pos < self.end {
            return Ok(true);
        }
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&self.stream),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        loop {
            // SAFETY: `pfd` is one valid pollfd and `ts` a valid timespec, both live for
            // the call; a null signal mask leaves the mask unchanged.
            let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
            match r {
                0 => return Ok(false),
                r if r > 0 => return Ok(true),
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != ErrorKind::Interrupted {
                        return Err(RspError::Io("cannot poll the socket", e));
                    }
                }
            }
        }
    }

    /// Makes sure at least one unconsumed byte is buffered.
    fn fill(&mut self) -> Result<()> {
        if self.pos >= self.end {
            self.refill()?;
        }
        Ok(())
    }

    fn next_byte(&mut self) -> Result<u8> {
        self.fill()?;
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    fn refill(&mut self) -> Result<()> {
        self.pos = 0;
        self.end = 0;
        loop {
            match self.stream.read(&mut self.buf) {
                Ok(0) => return Err(RspError::Closed),
                Ok(n) => {
                    self.end = n;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(RspError::Io("no reply from the stub", e)),
            }
        }
    }
}

/// Parses a stop reply; None for a console-output packet.
pub fn parse_stop(p: &[u8]) -> Result<Option<Stop>> {
    let text = || String::from_utf8_lossy(p).into_owned();
    let sig = || {
        p.get(1..3)
            .and_then(|h| unhex_byte(h[0], h[1]))
            .ok_or_else(|| RspError::Protocol(format!("malformed stop reply {:?}", text())))
    };
    match p.first() {
        Some(b'S' | b'T') => Ok(Some(Stop::Signal(sig()?, text()))),
        Some(b'W') => Ok(Some(Stop::Exited(sig()?))),
        Some(b'X') => Ok(Some(Stop::Terminated(sig()?))),
        // Console output: `O` and hex text (so not "OK").
        Some(b'O') if p.len() > 1 && p[1..].iter().all(u8::is_ascii_hexdigit) => Ok(None),
        _ => Err(RspError::Protocol(format!(
            "expected a stop reply, got {:?}",
            text()
        ))),
    }
}

fn hex2(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[(b >> 4) as usize], DIGITS[(b & 15) as usize]]
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn unhex_byte(hi: u8, lo: u8) -> Option<u8> {
    Some(nibble(hi)? << 4 | nibble(lo)?)
}

/// Appends the bytes of hex text `hex` to `out`. `xx` (an unavailable register) reads as 0.
pub fn decode_hex(hex: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if hex.len() % 2 != 0 {
        return Err(RspError::Protocol(format!(
            "odd-length hex reply ({} characters)",
            hex.len()
        )));
    }
    out.reserve(hex.len() / 2);
    for pair in hex.chunks_exact(2) {
        let b = match unhex_byte(pair[0], pair[1]) {
            Some(b) => b,
            None if pair == b"xx" => 0,
            None => {
                return Err(RspError::Protocol(format!(
                    "bad hex digits {:?}",
                    String::from_utf8_lossy(pair)
                )));
            }
        };
        out.push(b);
    }
    Ok(())
}

/// Undoes the protocol's run-length encoding: `c*n` is `c` repeated `n - 29 + 1` times.
pub fn run_length_decode(p: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(p.len() * 2);
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'*' {
            let (&prev, &count) = out
                .last()
                .zip(p.get(i + 1))
                .ok_or_else(|| RspError::Protocol("malformed run-length encoding".into()))?;
            let repeat = (count as usize)
                .checked_sub(29)
                .ok_or_else(|| RspError::Protocol("malformed run-length count".into()))?;
            out.extend(std::iter::repeat_n(prev, repeat));
            i += 2;
        } else {
            out.push(p[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_length() {
        // "0* " is '0' plus 32 - 29 = 3 more.
        assert_eq!(run_length_decode(b"a0* b").unwrap(), b"a0000b");
    }

    #[test]
    fn stop_replies() {
        assert_eq!(
            parse_stop(b"T05thread:p01.01;").unwrap(),
            Some(Stop::Signal(5, "T05thread:p01.01;".into()))
        );
        assert_eq!(
            parse_stop(b"T05thread:p01.0a;").unwrap().unwrap().thread(),
            Some(10)
        );
        assert_eq!(
            parse_stop(b"T02thread:03;").unwrap().unwrap().thread(),
            Some(3)
        );
        assert_eq!(parse_stop(b"S05").unwrap().unwrap().thread(), None);
        assert_eq!(parse_stop(b"W21").unwrap(), Some(Stop::Exited(0x21)));
        assert_eq!(parse_stop(b"O6869").unwrap(), None);
        assert!(parse_stop(b"OK").is_err());
    }

    #[test]
    fn hex() {
        let mut v = Vec::new();
        decode_hex(b"00ffA5xx", &mut v).unwrap();
        assert_eq!(v, [0, 0xff, 0xa5, 0]);
        assert!(decode_hex(b"0", &mut v).is_err());
    }
}
