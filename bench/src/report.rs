//! The results: the Markdown table with medians and ratios, and the raw samples as JSON.

use crate::figures::{Fig, Target, advantage};
use crate::measure::{Outcome, median};
use crate::stub::Kind;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Everything one run measured.
#[derive(Default)]
pub struct Results {
    /// (figure, stub) → (repetition, outcome), in the order measured.
    pub samples: BTreeMap<(Fig, u8), Vec<(usize, Outcome)>>,
    /// Stubs that offered no QStartNoAckMode.
    pub ack_only: Vec<Kind>,
}

fn kind_index(k: Kind) -> u8 {
    match k {
        Kind::Kvmgdb => 0,
        Kind::Qemu => 1,
    }
}

/// A figure's summary over the repetitions.
enum Summary {
    /// Not measured.
    None,
    /// The median of the values; how many repetitions failed, and why (the first reason).
    Median(f64, usize, Option<String>),
    /// Every repetition failed.
    Failed(String),
}

impl Results {
    /// Records one repetition's figures for `kind`.
    pub fn add(&mut self, rep: usize, kind: Kind, figs: Vec<(Fig, Outcome)>) {
        for (fig, o) in figs {
            self.samples
                .entry((fig, kind_index(kind)))
                .or_default()
                .push((rep, o));
        }
    }

    fn summary(&self, fig: Fig, kind: Kind) -> Summary {
        let Some(v) = self.samples.get(&(fig, kind_index(kind))) else {
            return Summary::None;
        };
        let values: Vec<f64> = v
            .iter()
            .filter_map(|(_, o)| match o {
                Outcome::Value(x, _) => Some(*x),
                Outcome::Failed(_) => None,
            })
            .collect();
        let first_failure = v.iter().find_map(|(_, o)| match o {
            Outcome::Failed(why) => Some(why.clone()),
            Outcome::Value(..) => None,
        });
        let failed = v.len() - values.len();
        if values.is_empty() {
            return Summary::Failed(first_failure.unwrap_or_default());
        }
        Summary::Median(median(&values), failed, first_failure)
    }

    fn median_of(&self, fig: Fig, kind: Kind) -> Option<f64> {
        match self.summary(fig, kind) {
            Summary::Median(m, _, _) => Some(m),
            _ => None,
        }
    }

    /// The Markdown table. `qemu_note` says why the QEMU column is empty, if it is.
    pub fn table(&self, qemu_note: Option<&str>) -> String {
        let mut t = String::new();
        t.push_str("| figure | kvmgdb | QEMU | kvmgdb advantage³ | target | verdict |\n");
        t.push_str("|---|---:|---:|---:|---|---|\n");
        let mut footnotes = Vec::new();
        for fig in Fig::ALL {
            let k = self.summary(fig, Kind::Kvmgdb);
            let q = self.summary(fig, Kind::Qemu);
            // A part of the benchmark that did not run (--only-linux, or no --linux).
            if matches!((&k, &q), (Summary::None, Summary::None)) {
                continue;
            }
            let cell = |s: &Summary, notes: &mut Vec<String>, who: &str| match s {
                Summary::None => "—".to_string(),
                Summary::Median(m, 0, _) => fmt_value(fig, *m),
                Summary::Median(m, n, why) => {
                    notes.push(format!(
                        "{who} {}: failed in {n} repetitions: {}",
                        fig.key(),
                        why.as_deref().unwrap_or("")
                    ));
                    format!("{} ({n} failed)", fmt_value(fig, *m))
                }
                Summary::Failed(why) => {
                    notes.push(format!("{who}, {}: fails: {why}", fig.label()));
                    "**fails**".to_string()
                }
            };
            let kc = cell(&k, &mut footnotes, "kvmgdb");
            let qc = cell(&q, &mut footnotes, "QEMU");
            let (km, qm) = (
                self.median_of(fig, Kind::Kvmgdb),
                self.median_of(fig, Kind::Qemu),
            );
            let adv = match (km, qm) {
                (Some(a), Some(b)) if fig.compared() && advantage(fig, a, b).is_finite() => {
                    format!("{:.1}×", advantage(fig, a, b))
                }
                _ => "—".into(),
            };
            let (target, verdict) = self.verdict(fig, km, qm, qemu_note.is_some());
            let _ = writeln!(
                t,
                "| {} | {kc} | {qc} | {adv} | {target} | {verdict} |",
                fig.label()
            );
        }
        t.push('\n');
        let quick_ran = self.samples.keys().any(|(fig, _)| !fig.is_linux());
        t.push_str(if quick_ran {
            "¹ Includes the guest filling its 16 MiB pattern (about 1 s of emulated SSE \
             stores under PVM) and, for QEMU, SeaBIOS; for information.\n\
             ² The stub's threads only (vCPU threads excluded), from /proc/PID/task/*/schedstat.\n\
             ³ How many times better kvmgdb is: kvmgdb/QEMU for rates, QEMU/kvmgdb for times, \
             CPU and memory. Medians over the repetitions.\n\
             ⁴ Resident memory outside the 128 MiB guest-RAM mapping (of which the guest \
             touches the 16 MiB pattern, plus firmware for QEMU), from /proc/PID/smaps.\n"
        } else {
            "³ How many times better kvmgdb is: QEMU/kvmgdb for times. Medians over the \
             repetitions.\n"
        });
        for k in &self.ack_only {
            let _ = writeln!(
                t,
                "\n{} offers no QStartNoAckMode, so all its figures (real gdb's too) are in \
                 ack mode; its no-ack and ack rows measure the same thing.",
                k.name()
            );
        }
        if let Some(note) = qemu_note {
            let _ = writeln!(t, "\nThe QEMU column is empty: {note}.");
        }
        for n in footnotes {
            let _ = writeln!(t, "\n- {n}");
        }
        t
    }

    fn verdict(&self, fig: Fig, k: Option<f64>, q: Option<f64>, no_qemu: bool) -> (String, String) {
        match fig.target() {
            Target::None => ("—".into(), "—".into()),
            Target::Ratio(r) => {
                let target = format!("≥{r}×");
                let v = match (k, q) {
                    (Some(k), Some(q)) => {
                        let a = advantage(fig, k, q);
                        if a >= r {
                            "met".into()
                        } else {
                            format!("**missed** ({a:.1}× of {r}×)")
                        }
                    }
                    _ if no_qemu => "no QEMU".into(),
                    _ => "not measured".into(),
                };
                (target, v)
            }
            Target::Below(b) => {
                let target = format!("<{b}%");
                let v = match k {
                    Some(k) if k < b => "met".into(),
                    Some(k) => format!("**missed** ({k:.2}%)"),
                    None => "not measured".into(),
                };
                (target, v)
            }
            Target::VsQemuHwBp(r) => {
                let target = format!("works; ≥{r}× QEMU hw bp");
                let qhw = self.median_of(Fig::HwBp, Kind::Qemu);
                let v = match (k, qhw) {
                    (None, _) => "**missed** (fails)".into(),
                    (Some(k), Some(q)) => {
                        let a = k / q;
                        if a >= r {
                            format!("met ({a:.1}×)")
                        } else {
                            format!("**missed** ({a:.1}× of {r}×)")
                        }
                    }
                    (Some(_), None) if no_qemu => "works; no QEMU".into(),
                    (Some(_), None) => "works".into(),
                };
                (target, v)
            }
        }
    }

    /// The raw samples as JSON; `smp` is the SMP part's samples (a JSON array), if it ran.
    pub fn json(
        &self,
        header: &[(&str, String)],
        stubs: &[(Kind, String)],
        smp: Option<&str>,
    ) -> String {
        let mut j = String::from("{\n");
        for (k, v) in header {
            let _ = writeln!(j, "  {}: {},", json_str(k), json_str(v));
        }
        j.push_str("  \"stubs\": {");
        let stubs: Vec<String> = stubs
            .iter()
            .map(|(k, cmd)| format!("{}: {}", json_str(k.name()), json_str(cmd)))
            .collect();
        j.push_str(&stubs.join(", "));
        j.push_str("},\n");
        if let Some(smp) = smp {
            let _ = writeln!(j, "  \"smp_samples\": {smp},");
        }
        j.push_str("  \"samples\": [\n");
        let mut rows = Vec::new();
        for ((fig, k), v) in &self.samples {
            let stub = if *k == 0 { Kind::Kvmgdb } else { Kind::Qemu };
            for (rep, o) in v {
                let body = match o {
                    Outcome::Value(x, raw) => {
                        let raw: Vec<String> = raw.iter().map(|r| json_num(*r)).collect();
                        format!("\"value\": {}, \"raw\": [{}]", json_num(*x), raw.join(", "))
                    }
                    Outcome::Failed(why) => format!("\"failed\": {}", json_str(why)),
                };
                rows.push(format!(
                    "    {{\"figure\": {}, \"stub\": {}, \"rep\": {rep}, {body}}}",
                    json_str(fig.key()),
                    json_str(stub.name())
                ));
            }
        }
        j.push_str(&rows.join(",\n"));
        j.push_str("\n  ],\n  \"medians\": {");
        let mut med = Vec::new();
        for fig in Fig::ALL {
            for kind in [Kind::Kvmgdb, Kind::Qemu] {
                if let Some(m) = self.median_of(fig, kind) {
                    med.push(format!(
                        "\n    {}: {}",
                        json_str(&format!("{}/{}", fig.key(), kind.name())),
                        json_num(m)
                    ));
                }
            }
        }
        j.push_str(&med.join(","));
        j.push_str("\n  }\n}\n");
        j
    }
}

fn fmt_value(fig: Fig, v: f64) -> String {
    let d = fig.decimals(v);
    let s = format!("{v:.d$}");
    // Thousands separators for the big rates.
    if d == 0 && v.abs() >= 10_000.0 {
        let digits: Vec<char> = s.chars().collect();
        let mut out = String::new();
        for (i, c) in digits.iter().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(*c);
        }
        out
    } else {
        s
    }
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC` (civil-from-days, H. Hinnant).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn thousands() {
        assert_eq!(fmt_value(Fig::Step, 123_456.4), "123,456");
        assert_eq!(fmt_value(Fig::Step, 1_234.4), "1234");
        assert_eq!(fmt_value(Fig::Launch, 4.256), "4.26");
    }

    #[test]
    fn date_shape() {
        let d = utc_now();
        assert_eq!(d.len(), "2025-01-01 00:00 UTC".len());
        assert!(d.starts_with("20"));
    }
}
