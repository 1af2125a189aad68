//! Readers of debugger output: substring assertions, numbers as gdb prints them, tagged
//! `key=value` lines, marked sections, and register dumps from gdb and LLDB.

use std::collections::BTreeMap;

/// Fails unless `out` contains `needle`, showing the whole output.
#[track_caller]
pub fn assert_contains(out: &str, needle: &str) {
    assert!(
        out.contains(needle),
        "expected {needle:?} in output:\n{out}"
    );
}

/// Fails if `out` contains `needle`, showing the whole output.
#[track_caller]
pub fn assert_not_contains(out: &str, needle: &str) {
    assert!(
        !out.contains(needle),
        "did not expect {needle:?} in output:\n{out}"
    );
}

/// Parses a number as gdb prints it: `0x…` hexadecimal, otherwise decimal.
pub fn parse_num(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The `key=value` pairs of every line that starts with `tag` (the scripts print them with
/// `printf "tag key=%#lx ...\n"`), one map per line, in order.
pub fn tagged(out: &str, tag: &str) -> Vec<BTreeMap<String, u64>> {
    out.lines()
        .filter_map(|l| l.strip_prefix(tag))
        .filter(|rest| rest.starts_with(' ') || rest.is_empty())
        .map(|rest| {
            rest.split_whitespace()
                .map(|kv| {
                    let (k, v) = kv
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad key=value {kv:?} in {out}"));
                    let n =
                        parse_num(v).unwrap_or_else(|| panic!("bad number {v:?} in line {rest:?}"));
                    (k.to_string(), n)
                })
                .collect()
        })
        .collect()
}

/// The one line tagged `tag`; fails unless there is exactly one.
#[track_caller]
pub fn tagged_one(out: &str, tag: &str) -> BTreeMap<String, u64> {
    let mut all = tagged(out, tag);
    assert_eq!(
        all.len(),
        1,
        "expected one {tag:?} line in gdb output:\n{out}"
    );
    all.remove(0)
}

/// The lines between the line `==name==` (printed with `echo ==name==\n`) and the next
/// such marker line.
#[track_caller]
pub fn section(out: &str, name: &str) -> String {
    let marker = format!("=={name}==");
    let is_marker = |l: &str| l.len() > 4 && l.starts_with("==") && l.ends_with("==");
    let mut lines = out.lines().skip_while(|l| *l != marker);
    assert!(
        lines.next().is_some(),
        "no {marker:?} line in gdb output:\n{out}"
    );
    lines
        .take_while(|l| !is_marker(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The text after `marker` (for scripts that `echo` a marker between phases).
#[track_caller]
pub fn after<'a>(text: &'a str, marker: &str) -> &'a str {
    match text.find(marker) {
        Some(at) => &text[at + marker.len()..],
        None => panic!("marker {marker:?} not in output:\n{text}"),
    }
}

/// The text after `start` up to the next `end` (or the end of `text`).
#[track_caller]
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let rest = after(text, start);
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// Register values by name, from gdb `info registers` lines ("cr0   0x80010033   [ PE ... ]",
/// the first value column) or LLDB `register read` lines ("cr0 = 0x0000000080010033").
/// Later lines win.
pub fn registers(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let mut value = words.next()?;
            if value == "=" {
                value = words.next()?;
            }
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            Some((name.to_string(), parse_num(value)?))
        })
        .collect()
}

/// Fails unless register `name` was shown with `value` (in `regs`, parsed from `text`).
#[track_caller]
pub fn assert_reg(regs: &BTreeMap<String, u64>, name: &str, value: u64, text: &str) {
    assert_eq!(
        regs.get(name).copied(),
        Some(value),
        "{name} should be {value:#x}; output:\n{text}"
    );
}
