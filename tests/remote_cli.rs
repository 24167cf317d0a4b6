//! Remote reads end to end over a loopback HTTP range server: the `zt`
//! commands that read a file take `http://` URLs, and a sharded `.zt` set
//! opened by URL finds its shards next to the root URL (a missing shard is
//! an error naming it).

mod common;
use common::tmp::tmp;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use ztensor::convert::shard_write::convert_sharded;
use ztensor::{Error, OpenOptions, Reader, WriteOptions, Writer, ZstdOptions};

/// Serves the files of one directory on 127.0.0.1 with `HEAD` and ranged
/// `GET` (`ETag` = size and mtime, `If-Match` honoured), one request per
/// connection; records `METHOD /path` of every request.
struct RangeServer {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl RangeServer {
    fn start(root: &Path) -> RangeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (root, log2) = (root.to_path_buf(), Arc::clone(&log));
        // Lives until the test process exits; it only answers loopback.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, log) = (root.clone(), Arc::clone(&log2));
                std::thread::spawn(move || {
                    let _ = serve(stream, &root, &log);
                });
            }
        });
        RangeServer { port, log }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

fn serve(stream: TcpStream, root: &Path, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (method, path) = (
        words.next().unwrap_or("").to_string(),
        words.next().unwrap_or("/").to_string(),
    );
    let (mut range, mut if_match) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "if-match" => if_match = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    log.lock().unwrap().push(format!("{method} {path}"));
    let mut out = stream;
    let file = root.join(path.trim_start_matches('/'));
    let data = match (path.contains(".."), std::fs::read(&file)) {
        (false, Ok(d)) => d,
        _ => {
            return out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
        }
    };
    let mtime = std::fs::metadata(&file)?
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let etag = format!("\"{}-{mtime}\"", data.len());
    let common = format!(
        "Accept-Ranges: bytes\r\nETag: {etag}\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\nConnection: close\r\n"
    );
    if if_match.as_ref().is_some_and(|m| m != &etag) {
        return out.write_all(
            b"HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    if method == "HEAD" {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{common}\r\n",
            data.len()
        );
        return out.write_all(head.as_bytes());
    }
    let (start, end) = match range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
    {
        Some((a, b)) => {
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().map_or(data.len(), |b: usize| b + 1);
            (a.min(data.len()), b.min(data.len()))
        }
        None => (0, data.len()),
    };
    let status = if range.is_some() {
        format!(
            "206 Partial Content\r\nContent-Range: bytes {start}-{}/{}",
            end.saturating_sub(1),
            data.len()
        )
    } else {
        "200 OK".to_string()
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{common}\r\n",
        end - start
    );
    out.write_all(head.as_bytes())?;
    out.write_all(&data[start..end])?;
    // Drain anything the client still sends before closing.
    let _ = reader.read(&mut [0u8; 16]);
    Ok(())
}

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 1000) as f32 / 7.0
        })
        .collect()
}

/// A model: three raw f32 tensors (64 KiB to 1 MiB) and a zstd one.
fn write_model(path: &Path) {
    let mut w = Writer::create(path).unwrap();
    w.add("a", &[128, 128], &values(1, 128 * 128)).unwrap();
    w.add("b", &[512, 512], &values(2, 512 * 512)).unwrap();
    w.add("c", &[100, 300], &values(3, 100 * 300)).unwrap();
    w.set_defaults(Some(ZstdOptions::default()), Some(ztensor::DigestAlg::Xxh3))
        .unwrap();
    w.add("z", &[256, 256], &values(4, 256 * 256)).unwrap();
    w.finish().unwrap();
}

/// Every object of `b` equals `a`'s: shape, layout and decoded bytes.
fn assert_same(a: &Reader, b: &Reader) {
    let names: Vec<&str> = a.names().collect();
    assert_eq!(names, b.names().collect::<Vec<_>>());
    for n in names {
        let (oa, ob) = (a.object(n).unwrap(), b.object(n).unwrap());
        assert_eq!((&oa.shape, &oa.layout), (&ob.shape, &ob.layout), "{n}");
        for role in oa.parts.keys() {
            assert!(
                a.part_bytes(n, role).unwrap() == b.part_bytes(n, role).unwrap(),
                "{n}/{role}"
            );
        }
    }
}

fn zt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn zt_commands_read_http_urls() {
    let d = tmp();
    let local = d.0.join("m.zt");
    write_model(&local);
    let server = RangeServer::start(&d.0);
    let url = server.url("m.zt");
    let out_dir = tmp();
    let o = |name: &str| out_dir.0.join(name).to_str().unwrap().to_string();

    let (ok, stdout, stderr) = zt(&["info", &url]);
    assert!(ok, "{stderr}");
    for name in ["a ", "b ", "c ", "z "] {
        assert!(stdout.contains(name), "{stdout}");
    }
    assert!(stdout.contains("zt.zstd-seekable/1"), "{stdout}");
    let (ok, stdout, stderr) = zt(&["verify", "--deep", &url]);
    assert!(
        ok && stdout.starts_with("ok: 4 objects"),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("4 digests checked"), "{stdout}");

    let (ok, _, stderr) = zt(&["get", &url, "z", "-o", &o("z-remote.npy")]);
    assert!(ok, "{stderr}");
    let (ok, _, _) = zt(&["get", local.to_str().unwrap(), "z", "-o", &o("z.npy")]);
    assert!(ok);
    assert_eq!(
        std::fs::read(o("z-remote.npy")).unwrap(),
        std::fs::read(o("z.npy")).unwrap()
    );

    let (ok, _, stderr) = zt(&["convert", "--quiet", &url, &o("conv.zt")]);
    assert!(ok, "{stderr}");
    assert_same(
        &Reader::open(&local).unwrap(),
        &Reader::open(o("conv.zt")).unwrap(),
    );
    let (ok, _, stderr) = zt(&["rewrite", "--compress", "3", &url, &o("re.zt")]);
    assert!(ok, "{stderr}");
    assert_same(
        &Reader::open(&local).unwrap(),
        &Reader::open(o("re.zt")).unwrap(),
    );
    let (ok, _, stderr) = zt(&["export", &url, &o("remote.safetensors")]);
    assert!(ok, "{stderr}");
    let (ok, _, _) = zt(&["export", local.to_str().unwrap(), &o("local.safetensors")]);
    assert!(ok);
    assert_eq!(
        std::fs::read(o("remote.safetensors")).unwrap(),
        std::fs::read(o("local.safetensors")).unwrap()
    );
    assert!(server.requests().iter().any(|r| r.starts_with("GET /m.zt")));

    let missing = server.url("nope.zt");
    let (ok, _, stderr) = zt(&["info", &missing]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: io:") && stderr.contains(&missing),
        "{stderr}"
    );
}

#[test]
fn a_sharded_set_opened_by_url_finds_its_shards_next_to_the_root() {
    let d = tmp();
    let single = d.0.join("single.zt");
    write_model(&single);
    let root = d.0.join("set.zt");
    convert_sharded(
        &single,
        &root,
        WriteOptions::default(),
        1 << 19,
        &mut |_, _| {},
    )
    .unwrap();
    let local = Reader::open(&root).unwrap();
    let shards: Vec<String> = local.manifest().shards.keys().cloned().collect();
    assert!(shards.len() >= 2, "{shards:?}");
    let server = RangeServer::start(&d.0);
    let url = server.url("set.zt");

    let remote = ztensor::remote::open_url(&url, &[], OpenOptions::default()).unwrap();
    assert!(
        server.requests().iter().all(|r| r.ends_with(" /set.zt")),
        "opening reads only the root"
    );
    assert_same(&Reader::open(&single).unwrap(), &remote);
    let log = server.requests();
    for s in &shards {
        let path = format!("/set-{s}.zt");
        assert!(log.iter().any(|r| r.ends_with(&path)), "{path}: {log:?}");
    }
    let rep = remote.verify().unwrap();
    assert_eq!(rep.shards_checked, shards.len());
    let (ok, stdout, stderr) = zt(&["verify", "--deep", &url]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("{} shards", shards.len())),
        "{stdout}"
    );

    // A missing shard: an I/O error naming the shard and its URL.
    let gone = &shards[shards.len() - 1];
    std::fs::remove_file(d.0.join(format!("set-{gone}.zt"))).unwrap();
    let remote = ztensor::remote::open_url(&url, &[], OpenOptions::default()).unwrap();
    let e = remote.verify().unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("shard {gone:?}")) && text.contains(&format!("set-{gone}.zt")),
        "{text}"
    );
    let (ok, _, stderr) = zt(&["verify", "--deep", &url]);
    assert!(
        !ok && stderr.contains(&format!("set-{gone}.zt")),
        "{stderr}"
    );
}
