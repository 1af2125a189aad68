//! The README's examples, run as written: every `set $reg = …` command the README shows
//! must work in the real gdb against kvmgdb (issue 8, defect 13: `set $cr3 = …` answered
//! "Invalid cast." in gdb 13, the flags-typed registers needing a `(long)` cast).

mod common;

use common::*;

/// The backquoted `set $…` commands in the README, in order.
fn readme_set_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    // Join wrapped lines so a command split across two lines is read whole.
    let text = readme.replace('\n', " ");
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.starts_with("set $"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readmes_register_writes_work_in_gdb() {
    require_kvm_and_gdb();
    let commands = readme_set_commands();
    assert!(
        commands.iter().any(|c| c.starts_with("set $cr3")),
        "the README shows a CR3 write: {commands:?}"
    );
    assert!(
        commands.iter().all(|c| !c.contains('…')),
        "every example is complete: {commands:?}"
    );
    let dir = TestDir::new("readme-set");
    let k = Kvmgdb::start(&dir, Boot::guest("demo.elf"));
    // Each command between markers, so whatever gdb answers is known to be its answer; one
    // step after them all, so the writes have been through KVM and back.
    let mut ex: Vec<String> = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        ex.push(format!("echo <<<{i}\\n"));
        ex.push(c.clone());
        ex.push(format!("echo >>>{i}\\n"));
    }
    ex.push("stepi".into());
    ex.push("echo --- after\\n".into());
    ex.push("p/x $cr3".into());
    ex.push("p/x $k_gs_base".into());
    ex.push("p $xmm0.v4_int32[0]".into());
    ex.push("kill".into());
    let ex: Vec<&str> = ex.iter().map(String::as_str).collect();
    let out = k.gdb_ex(&dir, &guest("demo.elf"), &ex);
    for (i, c) in commands.iter().enumerate() {
        let answer = between(&out, &format!("<<<{i}\n"), &format!(">>>{i}\n"));
        assert!(
            answer.trim().is_empty(),
            "`{c}` answered {answer:?}; gdb output:\n{out}"
        );
    }
    // The README's last CR3 write clears the bit its first one set.
    let after = after(&out, "--- after");
    assert_contains(after, "= 0x9000\n");
    assert_contains(after, "= 0x5678\n");
    assert_contains(after, "= 7\n");
}
