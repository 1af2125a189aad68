//! RSP data encodings: hex, and the binary escaping of `X` and `qXfer` data.

use std::fmt::Write as _;

/// Bytes as lowercase hex, two digits each (RSP manual, "Overview").
pub(super) fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// `fmt::Write` into a byte buffer.
pub(super) struct HexSink<'a>(pub(super) &'a mut Vec<u8>);

impl std::fmt::Write for HexSink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Binary data as `X` sends it: `#`, `$`, `}` and `*` escaped as `}` and the byte XOR 0x20
/// (RSP manual, "Overview", binary data).
pub(super) fn escape_binary(data: &[u8], out: &mut Vec<u8>) {
    for &b in data {
        if matches!(b, b'#' | b'$' | b'}' | b'*') {
            out.push(b'}');
            out.push(b ^ 0x20);
        } else {
            out.push(b);
        }
    }
}

/// The inverse of [`escape_binary`]: `qXfer` data as the stub sends it, unescaped.
pub(super) fn unescape_binary(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut it = data.iter();
    while let Some(&b) = it.next() {
        if b == b'}' {
            if let Some(&n) = it.next() {
                out.push(n ^ 0x20);
            }
        } else {
            out.push(b);
        }
    }
    out
}
