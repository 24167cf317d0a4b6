//! Starting and talking to a `zt serve` process.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use ztensor::engine::{Engine, EngineOptions, GenerateParams, GrammarSpec, KvType, SamplerConfig};

pub const KEY: &str = "test-key-0123";

pub fn fixture(name: &str) -> PathBuf {
    std::env::var_os("ZT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("gguf")
        .join(name)
}

/// A fresh empty directory under the target directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "serve-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    agent: ureq::Agent,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer: status, headers we look at, body.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Server {
    /// Starts `zt serve MODEL --bind 127.0.0.1:0 --api-key KEY ARGS` and
    /// waits until `/health` is 200.
    pub fn start(model: &Path, args: &[&str]) -> Server {
        // `ZT_SERVE_BIN` runs the tests against another build (an older
        // one, to see a new test fail before its fix).
        let bin = std::env::var_os("ZT_SERVE_BIN")
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_zt")), PathBuf::from);
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(model)
            .args(["--bind", "127.0.0.1:0", "--api-key", KEY, "--threads", "1"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting zt serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let s = Server {
            child,
            base,
            agent: agent(),
        };
        let t0 = Instant::now();
        loop {
            let a = s.request("GET", "/health", None, &[]);
            if a.status == 200 {
                break;
            }
            assert_eq!(a.status, 503, "{}", a.text());
            assert!(t0.elapsed() < Duration::from_secs(30), "model never loaded");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// A request with the test key (`headers` replace it when they set
    /// an auth header).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {KEY}");
        let mut hs: Vec<(&str, &str)> = headers.to_vec();
        if !headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("authorization")
                || k.eq_ignore_ascii_case("x-api-key")
                || *k == "-noauth"
        }) {
            hs.push(("Authorization", &auth));
        }
        hs.retain(|(k, _)| *k != "-noauth");
        let result = match method {
            "GET" | "DELETE" => {
                let mut r = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                for (k, v) in &hs {
                    r = r.header(*k, *v);
                }
                r.call()
            }
            _ => {
                let mut r = self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json");
                for (k, v) in &hs {
                    r = r.header(*k, *v);
                }
                r.send(body.unwrap_or(b""))
            }
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let h = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = h("retry-after");
        let content_type = h("content-type").unwrap_or_default();
        Answer {
            status: resp.status().as_u16(),
            retry_after,
            content_type,
            body: read_body(&mut resp),
        }
    }

    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, Some(body.to_string().as_bytes()), &[])
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None, &[])
    }

    /// The process's exit, for restart tests.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }
}

/// An HTTP client that returns error statuses as answers and gives up
/// after 60 s.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// An answer's whole body (up to 64 MiB).
pub fn read_body(resp: &mut ureq::http::Response<ureq::Body>) -> Vec<u8> {
    let mut body = Vec::new();
    resp.body_mut()
        .with_config()
        .limit(64 << 20)
        .reader()
        .read_to_end(&mut body)
        .unwrap();
    body
}

/// Splits an SSE body into its `data:` payloads, checking the framing byte
/// by byte: only `data: <payload>\n\n` events, the last one `[DONE]`.
pub fn sse_events(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).expect("SSE body is UTF-8");
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "no [DONE] at the end: {text:?}"
    );
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let ev = rest
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("event without data: {rest:?}"));
        let end = ev.find("\n\n").expect("event not closed by a blank line");
        let payload = &ev[..end];
        assert!(!payload.contains('\n'), "multi-line payload {payload:?}");
        rest = &ev[end + 2..];
        if payload == "[DONE]" {
            assert!(rest.is_empty(), "bytes after [DONE]: {rest:?}");
            return out;
        }
        out.push(serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}: {payload}")));
    }
}

/// What the library's engine generates greedily for `prompt`.
pub fn engine_greedy(model: &Path, prompt: &str, max_tokens: usize) -> (String, Vec<u32>) {
    let run = engine_run(model, prompt, max_tokens, None);
    (run.text, run.ids)
}

/// One greedy run of the library's engine.
pub struct EngineRun {
    pub text: String,
    pub ids: Vec<u32>,
    /// The stop reason's name (empty if none was reported).
    pub reason: String,
}

/// The library engine's greedy output for `prompt` (f16 KV, one thread,
/// seed 0), under `grammar` when given: what the server must match.
pub fn engine_run(
    model: &Path,
    prompt: &str,
    max_tokens: usize,
    grammar: Option<GrammarSpec>,
) -> EngineRun {
    let mut e = Engine::open(
        model,
        EngineOptions {
            n_threads: 1,
            kv_type: KvType::F16,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let params = GenerateParams {
        max_tokens,
        sampler: SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        },
        seed: Some(0),
        grammar,
        ..Default::default()
    };
    let mut ids = Vec::new();
    let mut reason = String::new();
    let text = e
        .generate(prompt, &params, |t| {
            ids.push(t.id);
            if let Some(r) = t.stop_reason {
                reason = r.name().to_string();
            }
            true
        })
        .unwrap();
    EngineRun { text, ids, reason }
}

pub fn completion(prompt: &str, max_tokens: usize) -> Value {
    json!({"model": "x", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
}
