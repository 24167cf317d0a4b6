//! Crash consistency: a writer process killed with SIGKILL at random points
//! while saving over (or appending to) an existing file leaves the old file
//! byte-identical, or the complete new one: never a partial file.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use ztensor::{DType, ElementType, Reader, Writer};

const TENSOR_BYTES: usize = 48 << 20;

/// What the child does: a streamed 48 MiB save, or an append of the same.
fn child_work(mode: &str, target: &Path) {
    let data: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut w = match mode {
        "append" => Writer::append(target).unwrap(),
        _ => Writer::create(target).unwrap(),
    };
    let mut s = w
        .stream_dense("big", &[TENSOR_BYTES as u64], ElementType::plain(DType::U8))
        .unwrap();
    for _ in 0..TENSOR_BYTES / data.len() {
        s.write(&data).unwrap();
    }
    s.finish().unwrap();
    w.finish().unwrap();
}

/// Runs in the child process (spawned by the tests below).
#[test]
#[ignore = "child process of the crash tests"]
fn crash_child() {
    if let (Ok(mode), Ok(target)) = (
        std::env::var("ZT_CRASH_MODE"),
        std::env::var("ZT_CRASH_TARGET"),
    ) {
        child_work(&mode, Path::new(&target));
    }
}

fn spawn(mode: &str, target: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--quiet",
            "--test-threads=1",
        ])
        .env("ZT_CRASH_MODE", mode)
        .env("ZT_CRASH_TARGET", target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn old_file(path: &Path) -> Vec<u8> {
    let mut w = Writer::create(path).unwrap();
    w.add("old", &[1000], &vec![3u8; 1000]).unwrap();
    w.finish().unwrap();
    std::fs::read(path).unwrap()
}

fn remove_temps(d: &Path) {
    for e in std::fs::read_dir(d).unwrap().flatten() {
        if e.file_name().to_string_lossy().contains(".tmp-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn run_kills(mode: &str, d: &Path, expected_new: &[u8], rounds: u64) {
    let target = d.join("model.zt");
    let old = if mode == "none" {
        Vec::new()
    } else {
        old_file(&target)
    };
    let child_mode = if mode == "append" { "append" } else { "save" };
    // One full run, to know how long a save takes.
    let t = Instant::now();
    assert!(spawn(child_mode, &target).wait().unwrap().success());
    let full = t.elapsed();
    assert_eq!(
        std::fs::read(&target).unwrap(),
        expected_new,
        "a full run writes the expected bytes"
    );
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut saw_old, mut saw_new) = (0, 0);
    for round in 0..rounds {
        if mode == "none" {
            let _ = std::fs::remove_file(&target);
        } else {
            std::fs::write(&target, &old).unwrap();
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // The first kill lands at once (before any write), so every run
        // covers "killed before the rename" even on a machine busy enough
        // that the timed full run was slow; the rest spread over the save.
        let delay = if round == 0 {
            Duration::ZERO
        } else {
            Duration::from_micros(seed % (full.as_micros() as u64 * 6 / 5 + 1))
        };
        let mut child = spawn(child_mode, &target);
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        match std::fs::read(&target) {
            Err(_) => {
                assert_eq!(mode, "none", "round {round}: the old file vanished");
                saw_old += 1;
            }
            Ok(now) if now == old && mode != "none" => saw_old += 1,
            Ok(now) if now == expected_new => {
                Reader::open(&target).unwrap().verify().unwrap();
                saw_new += 1;
            }
            Ok(now) => panic!(
                "round {round} (kill after {delay:?}): target is {} bytes, neither old nor new",
                now.len()
            ),
        }
        remove_temps(d);
    }
    eprintln!("{mode}: {rounds} kills, old intact {saw_old}, complete new {saw_new}");
    assert!(
        saw_old > 0,
        "no kill landed before the rename; the test proves nothing"
    );
}

fn expected(mode: &str) -> Vec<u8> {
    let d = dir(&format!("crash-expected-{mode}"));
    let target = d.join("model.zt");
    if mode == "append" {
        old_file(&target);
    }
    child_work(if mode == "append" { "append" } else { "save" }, &target);
    std::fs::read(&target).unwrap()
}

#[test]
fn killed_save_over_existing_file() {
    run_kills("replace", &dir("crash-replace"), &expected("replace"), 12);
}

#[test]
fn killed_save_to_new_path() {
    run_kills("none", &dir("crash-new"), &expected("replace"), 8);
}

#[test]
fn killed_append() {
    run_kills("append", &dir("crash-append"), &expected("append"), 12);
}
