//! Small helpers shared by the subcommands.

use std::path::Path;
use ztensor::{Backend, Error, OpenOptions, Reader, Result};

/// True for an `http://`, `https://` or `s3://` argument.
pub fn is_url(arg: &Path) -> bool {
    arg.to_str().is_some_and(|s| {
        ["http://", "https://", "s3://", "s3a://"]
            .iter()
            .any(|p| s.len() > p.len() && s[..p.len()].eq_ignore_ascii_case(p))
    })
}

/// Opens a file argument: a URL with range requests (spec §22; S3 settings
/// from the `AWS_*` environment), anything else as a local path.
pub fn open_input(arg: &Path, backend: Backend) -> Result<Reader> {
    match arg.to_str() {
        Some(url) if is_url(arg) => {
            ztensor::remote::open_url(url, &[], OpenOptions::default().backend(backend))
        }
        _ => OpenOptions::default().backend(backend).open(arg),
    }
}

/// `<rule-id>: <what>` for format errors, a kind prefix for the rest.
pub fn describe(e: &Error) -> String {
    match e {
        Error::Corrupt { .. } | Error::Checksum { .. } => e.to_string(),
        Error::Io { .. } => format!("io: {e}"),
        Error::Limit { .. } => e.to_string(),
        Error::NotFound { .. } => format!("not-found: {e}"),
        Error::Unsupported(_) => e.to_string(),
        Error::Usage(_) => format!("usage: {e}"),
        _ => e.to_string(),
    }
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u < UNITS.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    format!("{x:.1} {}", UNITS[u])
}

/// A plain-text table with left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

/// Writes to stdout; a closed pipe (`zt info f | head`) ends quietly
/// instead of panicking.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}
