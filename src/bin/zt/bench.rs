//! `zt bench`: times our I/O paths beside plain file I/O of the same bytes
//! and prints medians and ratios. A benchmark, not a test: nothing here
//! fails on a slow machine.

use crate::util::human_bytes;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use ztensor::{
    DType, DigestAlg, ElementType, Error, PartOptions, Reader, Result, WriteOptions, Writer,
    ZstdOptions,
};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Median seconds of `runs` calls of `f` (after `setup` each time).
fn time<S: FnMut(), F: FnMut() -> Result<()>>(runs: usize, mut setup: S, mut f: F) -> Result<f64> {
    let mut xs = Vec::with_capacity(runs);
    for _ in 0..runs {
        setup();
        let t = Instant::now();
        f()?;
        xs.push(t.elapsed().as_secs_f64());
    }
    Ok(median(xs))
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        context: what.to_string(),
        source: e,
    }
}

fn random_f32(n: usize, zero_fraction: u32) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if (s % 100) < zero_fraction as u64 {
                0.0
            } else {
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            }
        })
        .collect()
}

struct Row {
    what: &'static str,
    ours: f64,
    base: f64,
    base_name: &'static str,
    bytes: u64,
    target: &'static str,
}

fn print_rows(rows: &[Row]) {
    println!(
        "{:<34} {:>10} {:>10} {:>9}  {:<26} target",
        "measurement", "ztensor", "baseline", "ratio", "baseline is"
    );
    for r in rows {
        let gbps = |s: f64| {
            if r.bytes > 0 && s > 0.0 {
                format!(" ({:.2} GB/s)", r.bytes as f64 / s / 1e9)
            } else {
                String::new()
            }
        };
        println!(
            "{:<34} {:>8.2}ms {:>8.2}ms {:>8.2}x  {:<26} {}{}",
            r.what,
            r.ours * 1e3,
            r.base * 1e3,
            if r.base > 0.0 { r.ours / r.base } else { 0.0 },
            r.base_name,
            r.target,
            gbps(r.ours)
        );
    }
}

fn single_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

pub fn run(dir: &Path, mib: usize, runs: usize) -> Result<()> {
    let runs = runs.max(1);
    fs::create_dir_all(dir).map_err(io_err("creating the bench directory"))?;
    let n = mib * (1 << 20) / 4;
    let bytes = (n * 4) as u64;
    let data = random_f32(n, 0);
    let raw: &[u8] = bytemuck::cast_slice(&data);
    let plain = dir.join("plain.bin");
    let zt = dir.join("raw.zt");
    println!(
        "zt bench: {} f32 tensor, {} runs each (median), {} rayon threads, files in {}",
        human_bytes(bytes),
        runs,
        rayon::current_num_threads(),
        dir.display()
    );
    let mut rows = Vec::new();

    // 1. Raw write, both durable (fsync). Rounds alternate the two writers
    // and start from a synced page cache, so neither pays for the other's
    // dirty pages.
    let (mut plain_xs, mut zt_xs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for ours in [false, true] {
            let _ = fs::remove_file(&plain);
            let _ = fs::remove_file(&zt);
            let _ = std::process::Command::new("sync").status();
            let t = Instant::now();
            if ours {
                let mut w = Writer::create(&zt)?;
                w.add("t", &[n as u64], &data)?;
                w.finish()?;
                zt_xs.push(t.elapsed().as_secs_f64());
            } else {
                let mut f = File::create(&plain).map_err(io_err("create"))?;
                f.write_all(raw).map_err(io_err("write"))?;
                f.sync_all().map_err(io_err("fsync"))?;
                plain_xs.push(t.elapsed().as_secs_f64());
            }
        }
    }
    let (plain_write, zt_write) = (median(plain_xs), median(zt_xs));
    // Leave both files for the read measurements.
    {
        let mut f = File::create(&plain).map_err(io_err("create"))?;
        f.write_all(raw).map_err(io_err("write"))?;
    }
    let mut w = Writer::create(&zt)?;
    w.add("t", &[n as u64], &data)?;
    w.finish()?;
    rows.push(Row {
        what: "write raw + xxh3 (fsync, atomic)",
        ours: zt_write,
        base: plain_write,
        base_name: "write()+fsync",
        bytes,
        target: "≤ 1.1x",
    });

    // 2. Zero-copy open + typed view.
    let open_view = time(
        runs * 20,
        || {},
        || {
            let r = Reader::open(&zt)?;
            let t = r.read_dense("t")?;
            let s = t.as_slice::<f32>()?;
            std::hint::black_box(s.len());
            Ok(())
        },
    )?;
    rows.push(Row {
        what: "open + zero-copy view",
        ours: open_view,
        base: 0.0,
        base_name: "-",
        bytes: 0,
        target: "≤ 1 ms",
    });

    // 3. Owned read vs plain read() into a fresh buffer.
    let plain_read = time(
        runs,
        || {},
        || {
            let v = fs::read(&plain).map_err(io_err("read"))?;
            std::hint::black_box(v.len());
            Ok(())
        },
    )?;
    let owned_read = time(
        runs,
        || {},
        || {
            let r = Reader::open(&zt)?;
            let v = r.read_dense("t")?.to_vec::<f32>()?;
            std::hint::black_box(v.len());
            Ok(())
        },
    )?;
    let pread_read = time(
        runs,
        || {},
        || {
            let r = ztensor::OpenOptions::default()
                .backend(ztensor::Backend::Pread)
                .open(&zt)?;
            let v = r.read_dense("t")?;
            std::hint::black_box(v.bytes.len());
            Ok(())
        },
    )?;
    rows.push(Row {
        what: "owned read (mmap + copy)",
        ours: owned_read,
        base: plain_read,
        base_name: "fs::read",
        bytes,
        target: "≤ 1.2x",
    });
    rows.push(Row {
        what: "owned read (pread backend)",
        ours: pread_read,
        base: plain_read,
        base_name: "fs::read",
        bytes,
        target: "≤ 1.2x",
    });

    // 4. Verify from page cache.
    for (alg, label) in [
        (DigestAlg::Xxh3, "verify xxh3"),
        (DigestAlg::Crc32c, "verify crc32c"),
    ] {
        let path = dir.join(format!("verify-{alg}.zt"));
        let mut w = Writer::create_with(
            &path,
            WriteOptions {
                digest: Some(alg),
                ..WriteOptions::default()
            },
        )?;
        w.add("t", &[n as u64], &data)?;
        w.finish()?;
        let r = Reader::open(&path)?;
        r.verify()?;
        let t = time(runs, || {}, || r.verify().map(|_| ()))?;
        rows.push(Row {
            what: label,
            ours: t,
            base: 0.0,
            base_name: "-",
            bytes,
            target: "≥ 10 GB/s",
        });
        let _ = fs::remove_file(&path);
    }

    // 5. zstd level 3 on compressible data: parallel vs one thread.
    let comp = random_f32(n, 80);
    let craw: &[u8] = bytemuck::cast_slice(&comp);
    let zopts = ZstdOptions {
        level: 3,
        frame_size: 1 << 20,
    };
    let zpath = dir.join("zstd.zt");
    let write_z = || -> Result<()> {
        let mut w = Writer::create(&zpath)?;
        let opts = PartOptions {
            etype: ElementType::plain(DType::F32),
            compression: Some(zopts),
            digest: Some(DigestAlg::Xxh3),
        };
        w.add_bytes_with("t", &[n as u64], craw, &opts, None)?;
        w.finish().map(|_| ())
    };
    let z_par = time(runs, || {}, write_z)?;
    let z_one = single_thread(|| time(runs, || {}, write_z))?;
    let zsize = fs::metadata(&zpath).map_err(io_err("stat"))?.len();
    rows.push(Row {
        what: "zstd-3 write (80% zeros)",
        ours: z_par,
        base: z_one,
        base_name: "same code, 1 thread",
        bytes,
        target: "≥ 1.8x faster",
    });
    let read_z = || -> Result<()> {
        let r = Reader::open(&zpath)?;
        let v = r.read_dense("t")?;
        std::hint::black_box(v.bytes.len());
        Ok(())
    };
    let d_par = time(runs, || {}, read_z)?;
    let d_one = single_thread(|| time(runs, || {}, read_z))?;
    rows.push(Row {
        what: "zstd-3 read (80% zeros)",
        ours: d_par,
        base: d_one,
        base_name: "same code, 1 thread",
        bytes,
        target: "≥ 1.8x faster",
    });
    // The codec alone, in memory (no file I/O, no fsync).
    let enc = || {
        ztensor::zstd_seekable::encode(craw, zopts)
            .map(|v| std::hint::black_box(v.len()) > 0)
            .map(|_| ())
    };
    let e_par = time(runs, || {}, enc)?;
    let e_one = single_thread(|| time(runs, || {}, enc))?;
    rows.push(Row {
        what: "zstd-3 encode in memory",
        ours: e_par,
        base: e_one,
        base_name: "same code, 1 thread",
        bytes,
        target: "≥ 1.8x faster",
    });
    let encoded = ztensor::zstd_seekable::encode(craw, zopts)?;
    let dec = || {
        ztensor::zstd_seekable::decode(&encoded, bytes).map(|v| {
            std::hint::black_box(v.len());
        })
    };
    let dd_par = time(runs, || {}, dec)?;
    let dd_one = single_thread(|| time(runs, || {}, dec))?;
    rows.push(Row {
        what: "zstd-3 decode in memory",
        ours: dd_par,
        base: dd_one,
        base_name: "same code, 1 thread",
        bytes,
        target: "≥ 1.8x faster",
    });

    let r = Reader::open(&zpath)?;
    let rows_len = (n / 1024) as u64;
    let slice = time(
        runs,
        || {},
        || {
            let v = r.read_rows("t", 0..rows_len / 256)?;
            std::hint::black_box(v.bytes.len());
            Ok(())
        },
    )?;
    rows.push(Row {
        what: "zstd ranged read of 1/256",
        ours: slice,
        base: d_par,
        base_name: "whole decode",
        bytes: 0,
        target: "-",
    });

    // 6. Open a file of 10,000 small tensors.
    let many = dir.join("many.zt");
    let mut w = Writer::create(&many)?;
    let small = [1.0f32; 16];
    for i in 0..10_000 {
        w.add(&format!("layers.{i}.weight"), &[4, 4], &small)?;
    }
    w.finish()?;
    let open_many = time(
        runs * 4,
        || {},
        || {
            Reader::open(&many).map(|r| {
                std::hint::black_box(r.len());
            })
        },
    )?;
    rows.push(Row {
        what: "open 10,000 tensors",
        ours: open_many,
        base: 0.0,
        base_name: "-",
        bytes: 0,
        target: "≤ 20 ms",
    });

    println!();
    print_rows(&rows);
    println!(
        "\nzstd-3 size: {} of {} ({:.1}%); ratios are ztensor / baseline (below 1 = faster); speed-up of 2 threads over 1: file write {:.2}x, file read {:.2}x, encode {:.2}x, decode {:.2}x",
        human_bytes(zsize),
        human_bytes(bytes),
        zsize as f64 * 100.0 / bytes as f64,
        z_one / z_par,
        d_one / d_par,
        e_one / e_par,
        dd_one / dd_par
    );
    for p in [&plain, &zt, &zpath, &many] {
        let _ = fs::remove_file(p);
    }
    Ok(())
}
