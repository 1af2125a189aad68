//! The client connection: TCP or Unix socket, with writes buffered into whole packets.

use gdbstub::conn::Connection;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

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
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A gdbstub connection that gathers a packet's bytes and sends them in one write:
/// gdbstub writes byte by byte, and a syscall per byte would dominate every stop.
pub struct BufferedConn {
    stream: Stream,
    out: Vec<u8>,
}

impl BufferedConn {
    /// Wraps a connected stream.
    pub fn new(stream: Stream) -> Self {
        BufferedConn {
            stream,
            out: Vec::with_capacity(4096),
        }
    }

    /// The underlying stream.
    pub fn stream(&mut self) -> &mut Stream {
        &mut self.stream
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
        let out = std::mem::take(&mut self.out);
        let r = self.stream.io().write_all(&out);
        self.out = out;
        self.out.clear();
        r
    }

    fn on_session_start(&mut self) -> Result<(), Self::Error> {
        if let Stream::Tcp(s) = &self.stream {
            s.set_nodelay(true)?;
        }
        Ok(())
    }
}
