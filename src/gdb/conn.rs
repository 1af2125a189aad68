//! The client connection: the listening socket, and the connected TCP or Unix socket with
//! writes buffered into whole packets.

use super::GdbError;
use crate::config::GdbAddr;
use gdbstub::conn::Connection;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A listening socket.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix domain socket (removed again on drop).
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr` (not `GdbAddr::None`).
    pub fn bind(addr: &GdbAddr) -> Result<Listener, GdbError> {
        let err = |e| GdbError::Bind(addr.to_string(), e);
        match addr {
            GdbAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).map_err(err)?)),
            GdbAddr::Unix(p) => {
                // A stale socket file from an earlier run would make bind fail.
                if std::fs::metadata(p).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    let _ = std::fs::remove_file(p);
                }
                Ok(Listener::Unix(
                    UnixListener::bind(p).map_err(err)?,
                    p.clone(),
                ))
            }
            GdbAddr::None => Err(err(std::io::Error::other("no address"))),
        }
    }

    /// The bound address, e.g. with the port the OS chose for port 0.
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    /// The listening socket's file descriptor, for poll.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// Accepts one client.
    pub fn accept(&self) -> Result<Stream, GdbError> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
        .map_err(GdbError::Accept)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A connected gdb client.
pub enum Stream {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a Unix socket.
    Unix(UnixStream),
}

impl Stream {
    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    /// The socket's file descriptor, for poll.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// Reads what is available (blocking until something is).
    pub fn read_some(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.io().read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    /// Like [`Stream::read_some`], but first polls the socket without sleeping for up to
    /// `spin`: a client driving the stub in a loop sends its next packet within tens of
    /// microseconds, and a sleep/wake-up pair on each one costs about as much again.
    pub fn read_some_spinning(
        &mut self,
        buf: &mut [u8],
        spin: std::time::Duration,
    ) -> std::io::Result<usize> {
        let start = std::time::Instant::now();
        let fd = self.raw_fd();
        while start.elapsed() < spin {
            // SAFETY: `buf` is a valid, exclusively borrowed buffer of `buf.len()` bytes and
            // `fd` is this stream's open socket; MSG_DONTWAIT keeps the call from blocking.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => {
                    std::hint::spin_loop()
                }
                _ => return Err(e),
            }
        }
        self.read_some(buf)
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// How long the client may leave its replies unread before it counts as dead and the
/// session ends as a detach: the VM stays stopped while the stub waits, so a client that
/// stops reading must not hold it for ever. The clock starts at the first send(2) that
/// cannot take a whole reply and stops only when the socket's send queue has drained, not
/// when the next byte moves: a client that reads nothing still lets a trickle through (the
/// receiving kernel compacts its queue), enough for small replies to go out whole.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest one send(2) blocks (SO_SNDTIMEO, socket(7)), so that [`WRITE_TIMEOUT`] is
/// checked even when no byte moves. Set once per session.
const WRITE_SLICE: Duration = Duration::from_secs(1);

/// Bytes in `fd`'s send queue that the peer has not acknowledged (SIOCOUTQ, the same
/// request as TIOCOUTQ: tcp(7), unix(7)).
fn unacked(fd: RawFd) -> std::io::Result<libc::c_int> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is an open socket and SIOCOUTQ writes one c_int to the valid,
    // exclusively borrowed `n`.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n)
}

/// Writes all of `buf` to `stream`. `stalled_since` is when a send(2) last could not take
/// a whole reply with the queue not drained since; the write fails with `TimedOut` once
/// that is [`WRITE_TIMEOUT`] ago. The common path, a reply that fits, is one send(2).
fn write_bounded(
    stream: &mut Stream,
    mut buf: &[u8],
    stalled_since: &mut Option<Instant>,
) -> std::io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    if stalled_since.is_some() && unacked(stream.raw_fd())? == 0 {
        // The client has caught up with everything sent before.
        *stalled_since = None;
    }
    loop {
        match stream.io().write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            // A WRITE_SLICE passed with no byte taken, or a signal: check the clock.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
        if !buf.is_empty() {
            stalled_since.get_or_insert_with(Instant::now);
        }
        if let Some(since) = *stalled_since {
            if since.elapsed() >= WRITE_TIMEOUT {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the client left its replies unread for {WRITE_TIMEOUT:?} \
                         ({} bytes of this one unsent)",
                        buf.len()
                    ),
                ));
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
    }
}

/// A gdbstub connection that gathers a packet's bytes and sends them in one write:
/// gdbstub writes byte by byte, and a syscall per byte would dominate every stop. It keeps
/// the last bytes it sent, so a client's `-` can have them again (RSP manual, "Packet
/// Acknowledgment"), and it can be muted while a fresh gdbstub is told the session's state.
pub struct BufferedConn {
    stream: Stream,
    out: Vec<u8>,
    /// What the last flush sent (swapped with `out`, so no copy and no allocation).
    last: Vec<u8>,
    /// While muted, flushes drop what gdbstub wrote.
    muted: bool,
    /// While held, flushes keep what gdbstub wrote, for [`BufferedConn::take_held`].
    held: bool,
    /// See [`write_bounded`].
    stalled_since: Option<Instant>,
}

impl BufferedConn {
    /// Wraps a connected stream.
    pub fn new(stream: Stream) -> Self {
        BufferedConn {
            stream,
            out: Vec::with_capacity(4096),
            last: Vec::with_capacity(4096),
            muted: false,
            held: false,
            stalled_since: None,
        }
    }

    /// The underlying stream.
    pub fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Drops what was written but not flushed yet.
    pub fn discard(&mut self) {
        self.out.clear();
    }

    /// Mutes (or unmutes) the connection: flushes drop their bytes.
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
        self.out.clear();
    }

    /// Holds gdbstub's replies back (flushes keep them) until [`BufferedConn::take_held`],
    /// so that one can be amended before it goes out.
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// Ends a [`BufferedConn::hold`]: the bytes gdbstub wrote meanwhile, not sent.
    pub fn take_held(&mut self) -> Vec<u8> {
        self.held = false;
        std::mem::take(&mut self.out)
    }

    /// Sends the last reply again, from its `$` (without the `+` that acknowledged the
    /// packet it answered).
    pub fn retransmit(&mut self) -> std::io::Result<()> {
        let Some(start) = self.last.iter().position(|&b| b == b'$') else {
            return Ok(());
        };
        write_bounded(
            &mut self.stream,
            &self.last[start..],
            &mut self.stalled_since,
        )
    }

    /// Sends a reply of our own, framed for the acknowledgement mode, remembered like
    /// gdbstub's replies for a retransmit.
    pub fn reply(&mut self, body: &[u8], ack: bool) -> std::io::Result<()> {
        super::front::frame_into(&mut self.out, body, ack);
        self.flush()
    }

    /// Sends acknowledgement bytes (`+`, `-`) at once, outside any reply.
    pub fn send_control(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        write_bounded(&mut self.stream, bytes, &mut self.stalled_since)
    }
}

impl Connection for BufferedConn {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        self.out.push(byte);
        Ok(())
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.out.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        if self.held {
            return Ok(());
        }
        if self.muted || self.out.is_empty() {
            self.out.clear();
            return Ok(());
        }
        let r = write_bounded(&mut self.stream, &self.out, &mut self.stalled_since);
        std::mem::swap(&mut self.out, &mut self.last);
        self.out.clear();
        r
    }

    fn on_session_start(&mut self) -> Result<(), Self::Error> {
        match &self.stream {
            Stream::Tcp(s) => {
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(WRITE_SLICE))
            }
            Stream::Unix(s) => s.set_write_timeout(Some(WRITE_SLICE)),
        }
    }
}

/// The connection as gdbstub holds it: shared with the session loop, so that the loop
/// keeps the client when gdbstub fails a packet and a fresh gdbstub takes over.
#[derive(Clone)]
pub struct SharedConn(pub Rc<RefCell<BufferedConn>>);

impl SharedConn {
    /// Shares `conn`.
    pub fn new(conn: BufferedConn) -> SharedConn {
        SharedConn(Rc::new(RefCell::new(conn)))
    }

    /// The connection, for the session loop's own reads and replies.
    pub fn get(&self) -> std::cell::RefMut<'_, BufferedConn> {
        self.0.borrow_mut()
    }
}

impl Connection for SharedConn {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        self.0.borrow_mut().write(byte)
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.0.borrow_mut().write_all(buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.borrow_mut().flush()
    }

    fn on_session_start(&mut self) -> Result<(), Self::Error> {
        self.0.borrow_mut().on_session_start()
    }
}
