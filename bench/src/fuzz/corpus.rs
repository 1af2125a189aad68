//! The seed corpus (`bench/fuzz-corpus.txt`, packets real gdb sent) and the mutations the
//! fuzzer derives from it.

use super::rng::Rng;

/// The corpus file, compiled in so a run needs no file next to the binary.
const CORPUS: &str = include_str!("../../fuzz-corpus.txt");

/// The corpus packets' data, unescaped.
pub fn packets() -> Vec<Vec<u8>> {
    CORPUS
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("# "))
        .map(unescape)
        .collect()
}

/// Undoes the corpus's `\xNN` escapes.
fn unescape(line: &str) -> Vec<u8> {
    let b = line.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            if let Some(v) = b
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// True when a packet with this data only reads state: the fuzzer may send any mutation of
/// it without changing the guest. Everything that writes memory or registers, resumes,
/// detaches, kills, changes the session's mode or runs a monitor command is out.
pub fn read_only(p: &[u8]) -> bool {
    match p.first() {
        Some(b'?' | b'g' | b'p' | b'm' | b'x' | b'H' | b'T') => true,
        Some(b'q') => !p.starts_with(b"qRcmd"),
        Some(b'v') => !["vC", "vK", "vR", "vA", "vS"]
            .iter()
            .any(|k| p.starts_with(k.as_bytes())),
        _ => false,
    }
}

/// Letters no RSP packet starts with (gdb manual, "Packets"): a stub must answer such a
/// packet with the empty reply.
pub const UNKNOWN_LETTERS: &[u8] = b"jJKlLnNuUwyY";

/// A mutation of `p` that only reads state (see [`read_only`]): byte flips, insertions,
/// deletions, truncation, duplicated fields, huge numbers; a packet whose mutation would
/// write gets an unknown first letter instead. Framing bytes never appear in the result.
pub fn mutate(rng: &mut Rng, p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = if v.is_empty() {
            0
        } else {
            rng.index(v.len() + 1)
        };
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, *rng.pick(b"0123456789abcdefxz,:;.-=+!")),
            2 if !v.is_empty() => {
                v.remove(at.min(v.len() - 1));
            }
            3 => v.truncate(at),
            4 => {
                let digits = "f".repeat(1 + rng.index(40));
                v.splice(at..at, digits.bytes());
            }
            5 => {
                let tail = v[at..].to_vec();
                v.extend_from_slice(&tail);
            }
            6 => {
                let n = 1 + rng.index(8);
                let junk = rng.bytes(n);
                v.splice(at..at, junk).for_each(drop);
            }
            _ => v.insert(at, b','),
        }
    }
    for b in &mut v {
        // `$`, `#` would reframe the packet, 0x03 is an interrupt, `*` run-length encoding.
        if matches!(*b, b'$' | b'#' | 0x03 | b'*') {
            *b = b'x';
        }
    }
    if !read_only(&v) {
        match v.first_mut() {
            Some(first) => *first = *rng.pick(UNKNOWN_LETTERS),
            None => v.push(*rng.pick(UNKNOWN_LETTERS)),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_loads_and_mutations_stay_read_only() {
        let c = packets();
        assert!(c.len() > 40, "{} packets", c.len());
        assert!(c.iter().any(|p| p.starts_with(b"X") && p.contains(&0)));
        let mut rng = Rng::new(3);
        for _ in 0..10_000 {
            let src = rng.pick(&c).clone();
            let m = mutate(&mut rng, &src);
            assert!(read_only(&m) || UNKNOWN_LETTERS.contains(&m[0]), "{m:?}");
            assert!(!m.iter().any(|b| matches!(b, b'$' | b'#' | 0x03 | b'*')));
        }
    }
}
