//! `zt chat --snapshot` / `--resume`: a conversation saved by one process and
//! continued by another answers exactly as the uninterrupted conversation
//! (built-in model, greedy).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `zt chat` (built-in model, greedy) with `input` on stdin; returns
/// (stdout, stderr).
fn chat(input: &str, extra: &[&str], dir: &Path) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(["chat", "--temp", "0", "-n", "6", "-t", "1", "--ctx", "256"])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zt");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait zt");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "zt chat failed: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// A fresh directory for one test of this process.
fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zt-chat-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

#[test]
fn resumed_conversation_equals_the_uninterrupted_one() {
    let dir = tmp_dir("resume");
    let (whole, _) = chat("hello there\nand again\n", &[], dir.as_path());

    let (first, err) = chat("hello there\n", &["--snapshot", "conv.zt"], dir.as_path());
    assert!(err.contains("saved the conversation"), "{err}");
    assert!(dir.as_path().join("conv.zt").is_file());
    assert!(whole.starts_with(&first), "{whole:?} / {first:?}");

    let (second, err) = chat("and again\n", &["--resume", "conv.zt"], dir.as_path());
    assert!(!err.contains(" 0 tokens in it"), "{err}");
    assert_eq!(format!("{first}{second}"), whole);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_sampling_flags_are_refused_before_any_turn() {
    // No stdin is given: a refusal that waited for a turn would hang or
    // succeed with no output.
    for (flag, value, field) in [
        ("--temp", "-1", "temperature"),
        ("--temp", "NaN", "temperature"),
        ("--top-p", "0", "top_p"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_zt"))
            .args(["chat", &format!("{flag}={value}"), "-t", "1"])
            .stdin(Stdio::null())
            .output()
            .expect("run zt");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(stderr.contains(field), "{flag} {value}: {stderr}");
        assert!(
            !stderr.contains("chat ("),
            "{flag} {value}: the chat started: {stderr}"
        );
    }
}

#[test]
fn resume_refuses_a_file_that_is_not_a_snapshot() {
    let dir = tmp_dir("bad");
    std::fs::write(dir.as_path().join("bad.zt"), b"not a snapshot").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(["chat", "--resume", "bad.zt"])
        .current_dir(dir.as_path())
        .stdin(Stdio::null())
        .output()
        .expect("run zt");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `zt bench-gen` refuses counts of zero (a benchmark of no runs, tokens or
/// sequences would print nothing measured) before loading anything.
#[test]
fn bench_gen_refuses_zero_counts() {
    for args in [
        ["--runs", "0"],
        ["--prompt-tokens", "0"],
        ["--gen-tokens", "0"],
        ["--batch", "0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_zt"))
            .arg("bench-gen")
            .args(args)
            .output()
            .expect("run zt");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(
            stderr.contains(args[0]) && stderr.contains("0 is not in 1.."),
            "{args:?}: {stderr}"
        );
    }
}

/// `zt bench-gen --profile`: one profiled prefill and decode, every
/// matmul op counted once per layer per forward pass, the ops' times
/// within the wall time.
#[test]
fn bench_gen_profile_accounts_for_every_op() {
    let out = Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(["bench-gen", "-t", "1", "--runs", "1"])
        .args(["--prompt-tokens", "8", "--gen-tokens", "4", "--profile"])
        .output()
        .expect("run zt");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layers: u64 = text
        .split_whitespace()
        .skip_while(|w| *w != "model:")
        .nth(2)
        .and_then(|w| w.parse().ok())
        .expect("model line with the layer count");
    for (what, tokens, passes) in [("prefill", 8, 1), ("decode", 4, 4)] {
        let head = format!("profile of one {what} of {tokens} tokens: ");
        let section = text.split(&head).nth(1).expect("profile section");
        let wall: f64 = section
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .expect("wall ms");
        let mut sum = 0.0;
        let mut seen = Vec::new();
        for line in section.lines().skip(2) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.is_empty() || cols[0] == "profile" {
                break;
            }
            let n = cols.len();
            let ms: f64 = cols[n - 4].parse().expect("ms");
            let name = cols[..n - 4].join(" ");
            if name != "other" {
                sum += ms;
            }
            if ["attn_qkv", "ffn_down", "attn_output", "ffn_gate+up"].contains(&name.as_str()) {
                assert_eq!(cols[n - 1], (layers * passes).to_string(), "{line}");
            }
            seen.push(name);
        }
        for op in [
            "attn_qkv",
            "rope+kv+attention",
            "ffn_down",
            "output (norm+lm head)",
        ] {
            assert!(seen.iter().any(|s| s == op), "{what}: no {op} in {seen:?}");
        }
        assert_eq!(seen.iter().any(|s| s == "sampling"), what == "decode");
        assert!(
            sum <= wall * 1.01 + 0.05,
            "{what}: ops {sum} ms > wall {wall} ms"
        );
    }
    // The grammar benchmark is not profiled: said, not ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(["bench-gen", "--grammar", "g.gbnf", "--profile"])
        .output()
        .expect("run zt");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--profile"));
}
