//! Parsing of the user-facing settings: memory sizes, the gdb listen address, the serial sink.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Errors in command-line values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The memory size could not be parsed.
    #[error(
        "invalid memory size {0:?}: expected a number with an optional K, M or G suffix, e.g. 128M"
    )]
    BadSize(String),
    /// The memory size is zero or too small to boot anything.
    #[error("memory size {0:?} is too small: at least 2M is needed")]
    SizeTooSmall(String),
    /// The memory size is larger than this VMM supports.
    #[error("memory size {0:?} is too large: at most 64G is supported")]
    SizeTooLarge(String),
    /// The vCPU count is not a positive number.
    #[error("invalid vCPU count {0:?}: expected a number from 1")]
    BadCpus(String),
    /// The gdb address could not be parsed.
    #[error("invalid --gdb address {0:?}: expected HOST:PORT, :PORT, unix:PATH or none")]
    BadGdbAddr(String),
}

/// Parses a vCPU count: a positive number (the upper limit is the machine's, checked
/// against KVM when it is built).
pub fn parse_cpus(text: &str) -> Result<usize, ConfigError> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConfigError::BadCpus(text.to_string())),
    }
}

/// Smallest guest RAM we accept: room for the boot structures and a small kernel at 1 MiB.
pub const MIN_MEMORY: u64 = 2 << 20;
/// Largest guest RAM we accept.
pub const MAX_MEMORY: u64 = 64 << 30;

/// Parses a memory size such as `128M`, `1G`, `65536K` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadSize(text.to_string());
    let t = text.trim().to_ascii_uppercase();
    // Accept "128M", "128MB" and "128MiB" alike.
    let t = t.strip_suffix('B').unwrap_or(&t);
    let (digits, shift) = match t.strip_suffix('I').unwrap_or(t) {
        u if u.ends_with('K') => (&u[..u.len() - 1], 10),
        u if u.ends_with('M') => (&u[..u.len() - 1], 20),
        u if u.ends_with('G') => (&u[..u.len() - 1], 30),
        u if u.ends_with('T') => (&u[..u.len() - 1], 40),
        _ if t.ends_with('I') => return Err(bad()),
        u => (u, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| ConfigError::SizeTooLarge(text.to_string()))?;
    if bytes < MIN_MEMORY {
        return Err(ConfigError::SizeTooSmall(text.to_string()));
    }
    if bytes > MAX_MEMORY {
        return Err(ConfigError::SizeTooLarge(text.to_string()));
    }
    Ok(bytes)
}

/// Where the gdb stub listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GdbAddr {
    /// A TCP socket address.
    Tcp(SocketAddr),
    /// A Unix domain socket path.
    Unix(PathBuf),
    /// No stub: the guest runs at once.
    None,
}

impl GdbAddr {
    /// True when the address accepts connections from other machines.
    pub fn is_exposed(&self) -> bool {
        matches!(self, GdbAddr::Tcp(a) if !a.ip().is_loopback())
    }
}

impl FromStr for GdbAddr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::BadGdbAddr(s.to_string());
        if s == "none" {
            return Ok(GdbAddr::None);
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(GdbAddr::Unix(PathBuf::from(path)));
        }
        if let Some(port) = s.strip_prefix(':') {
            let port: u16 = port.parse().map_err(|_| bad())?;
            return Ok(GdbAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        if let Some(port) = s.strip_prefix("tcp::") {
            let port: u16 = port.parse().map_err(|_| bad())?;
            return Ok(GdbAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        let s2 = s.strip_prefix("tcp:").unwrap_or(s);
        if let Ok(addr) = s2.parse::<SocketAddr>() {
            return Ok(GdbAddr::Tcp(addr));
        }
        // HOST:PORT with a host name such as "localhost".
        use std::net::ToSocketAddrs;
        match s2.to_socket_addrs() {
            Ok(mut addrs) => addrs.next().map(GdbAddr::Tcp).ok_or_else(bad),
            Err(_) => Err(bad()),
        }
    }
}

impl fmt::Display for GdbAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GdbAddr::Tcp(a) => write!(f, "{a}"),
            GdbAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            GdbAddr::None => write!(f, "none"),
        }
    }
}

/// Where COM1 output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialSink {
    /// The process's standard output.
    Stdio,
    /// Discarded.
    None,
    /// Appended to a file (created or truncated at start).
    File(PathBuf),
}

impl FromStr for SerialSink {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "stdio" => SerialSink::Stdio,
            "none" => SerialSink::None,
            path => SerialSink::File(PathBuf::from(path)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128M"), Ok(128 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096k"), Ok(4 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("33554432"), Ok(32 << 20));
        for bad in ["", "M", "12Q", "-1M", "1.5G", "abc", "0x10M"] {
            assert!(
                matches!(parse_size(bad), Err(ConfigError::BadSize(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(parse_size("0"), Err(ConfigError::SizeTooSmall(_))));
        assert!(matches!(
            parse_size("1K"),
            Err(ConfigError::SizeTooSmall(_))
        ));
        assert!(matches!(
            parse_size("1T"),
            Err(ConfigError::SizeTooLarge(_))
        ));
        assert!(matches!(
            parse_size("99999999999999999999G"),
            Err(ConfigError::BadSize(_))
        ));
    }

    #[test]
    fn gdb_addrs() {
        assert_eq!(
            ":1234".parse(),
            Ok(GdbAddr::Tcp("127.0.0.1:1234".parse().unwrap()))
        );
        assert_eq!(
            "0.0.0.0:99".parse(),
            Ok(GdbAddr::Tcp("0.0.0.0:99".parse().unwrap()))
        );
        assert_eq!("unix:/tmp/x".parse(), Ok(GdbAddr::Unix("/tmp/x".into())));
        assert_eq!("none".parse(), Ok(GdbAddr::None));
        assert!("0.0.0.0:99".parse::<GdbAddr>().unwrap().is_exposed());
        assert!(!":1".parse::<GdbAddr>().unwrap().is_exposed());
        for bad in ["", ":", ":99999", "unix:", "nohost", "1.2.3.4"] {
            assert!(bad.parse::<GdbAddr>().is_err(), "{bad:?}");
        }
    }
}
