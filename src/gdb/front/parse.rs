//! Parsing helpers for packet arguments: hex numbers and data, escaped binary data and
//! thread-ids (RSP manual, "Overview" and "thread-id syntax").

/// A thread-id element (RSP manual, "thread-id syntax").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::gdb) enum Id {
    /// `-1`: all.
    All,
    /// `0`: any.
    Any,
    /// A positive number.
    Num(u64),
}

/// A thread-id: `[p<pid>.]<tid>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::gdb) struct ThreadId {
    pub(in crate::gdb) pid: Option<Id>,
    pub(in crate::gdb) tid: Id,
}

/// gdbstub's one process (its FAKE_PID).
pub(in crate::gdb) const PID: u64 = 1;

pub(in crate::gdb) fn parse_id(s: &[u8]) -> Option<Id> {
    if s == b"-1" {
        return Some(Id::All);
    }
    match parse_hex(s)? {
        0 => Some(Id::Any),
        n => Some(Id::Num(n)),
    }
}

pub(in crate::gdb) fn parse_thread(s: &[u8]) -> Option<ThreadId> {
    match s {
        [b'p', rest @ ..] => {
            let (pid, tid) = match split_once(rest, b'.') {
                Some((p, t)) => (p, Some(t)),
                None => (rest, None),
            };
            Some(ThreadId {
                pid: Some(parse_id(pid)?),
                tid: match tid {
                    Some(t) => parse_id(t)?,
                    None => Id::All, // `p<pid>` alone: all its threads
                },
            })
        }
        _ => Some(ThreadId {
            pid: None,
            tid: parse_id(s)?,
        }),
    }
}

pub(in crate::gdb) fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

pub(in crate::gdb) fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A non-empty hex number that fits 64 bits (leading zeros allowed).
pub(in crate::gdb) fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let d = hex_digit(b)?;
        acc.checked_mul(16)?.checked_add(u64::from(d))
    })
}

/// Non-empty hex data: pairs of hex digits.
pub(in crate::gdb) fn is_hex_bytes(s: &[u8]) -> bool {
    !s.is_empty() && is_hex_bytes_or_empty(s)
}

pub(in crate::gdb) fn is_hex_bytes_or_empty(s: &[u8]) -> bool {
    s.len() % 2 == 0 && s.iter().all(|&b| hex_digit(b).is_some())
}

/// The length of escaped binary data (`}` escapes the next byte, "Overview"), or None if
/// it ends inside an escape.
pub(in crate::gdb) fn binary_len(s: &[u8]) -> Option<usize> {
    let mut n = 0;
    let mut escaped = false;
    for &b in s {
        if escaped {
            escaped = false;
            n += 1;
        } else if b == b'}' {
            escaped = true;
        } else {
            n += 1;
        }
    }
    (!escaped).then_some(n)
}
