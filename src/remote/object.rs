//! [`RangeSource`] over `object_store`: `http://` / `https://` URLs (GET
//! with `Range`, on servers that answer 206) and `s3://bucket/key` (any
//! S3-compatible store).
//!
//! S3 settings come from the usual AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` for a
//! non-AWS endpoint, `AWS_ALLOW_HTTP=true` for a plain-HTTP one), and the
//! `options` passed to [`open_url`] override them, with the same names in
//! lower case with or without the `aws_` prefix (`endpoint_url`,
//! `region`, `access_key_id`, `allow_http`, ...). Failed requests are
//! retried twice (100 ms, then 200 ms later), within 30 s.

use super::RangeSource;
use crate::error::{Error, Result};
use crate::reader::{OpenOptions, Reader};
use crate::store::Store;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientConfigKey, GetOptions, GetRange, ObjectStore, RetryConfig,
};
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Requests of one batch in flight at once.
const CONCURRENCY: usize = 8;

/// The runtime every remote request runs on (two worker threads, made on
/// first use); callers block on it from ordinary threads.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ztensor-remote")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| {
        Error::io(
            "starting the remote runtime",
            std::io::Error::other(e.clone()),
        )
    })
}

fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(30),
    }
}

/// An `object_store` error as ours: a missing object is `NotFound` I/O,
/// the rest keep their message.
fn store_error(context: String, e: object_store::Error) -> Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => std::io::ErrorKind::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => std::io::ErrorKind::PermissionDenied,
        // `If-Match` failed: the object changed since it was opened.
        object_store::Error::Precondition { .. } => std::io::ErrorKind::InvalidData,
        _ => std::io::ErrorKind::Other,
    };
    Error::io(context, std::io::Error::new(kind, e))
}

/// One object of an `object_store` store.
pub struct ObjectSource {
    url: String,
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    len: u64,
    /// The object's entity tag at open: every read asks for this version
    /// (`If-Match`) and checks the answer, so a replaced object is an
    /// error, never a mix of two versions.
    e_tag: Option<String>,
}

impl std::fmt::Debug for ObjectSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSource")
            .field("url", &self.url)
            .field("len", &self.len)
            .finish()
    }
}

impl ObjectSource {
    /// Resolves `url` (`http`, `https` or `s3`) and asks for its size.
    pub fn open(url: &str, options: &[(String, String)]) -> Result<ObjectSource> {
        let parsed =
            url::Url::parse(url).map_err(|e| Error::usage(format!("{url:?} is not a URL: {e}")))?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            // The object stores address objects by path; dropping a query
            // (a signed link's signature) would read something else.
            return Err(Error::usage(format!(
                "{url:?}: URLs with a query or fragment (signed links) are not supported \
                 for remote reads; pass credentials as storage options"
            )));
        }
        let bad_option = |k: &str| Error::usage(format!("unknown remote option {k:?}"));
        let (store, path): (Arc<dyn ObjectStore>, ObjectPath) = match parsed.scheme() {
            "s3" | "s3a" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_retry(retry());
                for (k, v) in options {
                    let key = k.to_ascii_lowercase().parse().map_err(|_| bad_option(k))?;
                    b = b.with_config(key, v);
                }
                let store = b
                    .build()
                    .map_err(|e| store_error(format!("opening {url}"), e))?;
                let key = parsed.path().trim_start_matches('/');
                (
                    Arc::new(store),
                    ObjectPath::from_url_path(key)
                        .map_err(|e| Error::usage(format!("{url:?}: bad object key: {e}")))?,
                )
            }
            "http" | "https" => {
                let base = &parsed[..url::Position::BeforePath];
                let mut b = object_store::http::HttpBuilder::new()
                    .with_url(base)
                    .with_retry(retry())
                    .with_config(
                        ClientConfigKey::AllowHttp,
                        (parsed.scheme() == "http").to_string(),
                    );
                for (k, v) in options {
                    let key = k.to_ascii_lowercase().parse().map_err(|_| bad_option(k))?;
                    b = b.with_config(key, v);
                }
                let store = b
                    .build()
                    .map_err(|e| store_error(format!("opening {url}"), e))?;
                let path = ObjectPath::from_url_path(parsed.path().trim_start_matches('/'))
                    .map_err(|e| Error::usage(format!("{url:?}: bad path: {e}")))?;
                (Arc::new(store), path)
            }
            other => {
                return Err(Error::usage(format!(
                    "{url:?}: remote reads take http, https or s3 URLs, not {other:?}"
                )))
            }
        };
        let meta = runtime()?
            .block_on(store.head(&path))
            .map_err(|e| store_error(format!("asking for the size of {url}"), e))?;
        Ok(ObjectSource {
            url: url.to_string(),
            store,
            path,
            len: meta.size,
            e_tag: meta.e_tag,
        })
    }
}

impl RangeSource for ObjectSource {
    fn name(&self) -> &str {
        &self.url
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn fetch(&self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        let store = &self.store;
        let path = &self.path;
        let bodies = runtime()?.block_on(
            futures::stream::iter(ranges.iter().cloned())
                .map(|r| async move {
                    let what = format!("reading [{}, {}) of {}", r.start, r.end, self.url);
                    let options = GetOptions {
                        range: Some(GetRange::Bounded(r.clone())),
                        if_match: self.e_tag.clone(),
                        ..GetOptions::default()
                    };
                    let got = store
                        .get_opts(path, options)
                        .await
                        .map_err(|e| store_error(what.clone(), e))?;
                    // A server may ignore If-Match: check the version it
                    // answered with as well.
                    let changed = got.meta.size != self.len
                        || (self.e_tag.is_some() && got.meta.e_tag != self.e_tag);
                    if changed {
                        return Err(Error::io(
                            what,
                            std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!(
                                    "the object changed since it was opened (size {} then {}, \
                                     entity tag {:?} then {:?})",
                                    self.len, got.meta.size, self.e_tag, got.meta.e_tag
                                ),
                            ),
                        ));
                    }
                    got.bytes().await.map_err(|e| store_error(what, e))
                })
                .buffered(CONCURRENCY)
                .try_collect::<Vec<_>>(),
        )?;
        Ok(bodies.into_iter().map(|b| b.to_vec()).collect())
    }
}

/// Opens the `.zt` (or other readable format) at `url` for reading; see
/// the module notes for the URLs and options it takes.
///
/// A sharded `.zt` root's data shards are resolved relative to its URL,
/// as they are next to a local root (spec §8): shard `NAME` of
/// `.../model.zt` is `.../model-NAME.zt`, opened with the same options on
/// first use. A shard that cannot be opened is an I/O error naming it.
pub fn open_url(url: &str, options: &[(String, String)], open: OpenOptions) -> Result<Reader> {
    let source = ObjectSource::open(url, options)?;
    let mut reader = Reader::open_source(Arc::new(source), open)?;
    if !reader.manifest().shards.is_empty() {
        let prefix = shard_url_prefix(url)?;
        let options = options.to_vec();
        reader.set_shard_opener(Arc::new(move |name: &str| {
            let shard_url = format!("{prefix}-{name}.zt");
            let opened = ObjectSource::open(&shard_url, &options)
                .and_then(|s| crate::remote::RemoteFile::open(Arc::new(s)));
            match opened {
                Ok(file) => Ok((shard_url, Store::Remote(Arc::new(file)))),
                Err(Error::Io { context, source }) => Err(Error::Io {
                    context: format!("opening shard {name:?} ({shard_url}): {context}"),
                    source,
                }),
                Err(e) => Err(e),
            }
        }));
    }
    Ok(reader)
}

/// `.../dir/model` for `.../dir/model.zt`: the URL without its last path
/// segment's extension, to which a shard's `-NAME.zt` is appended.
fn shard_url_prefix(url: &str) -> Result<String> {
    let (dir, file) = url
        .rsplit_once('/')
        .filter(|(d, f)| !f.is_empty() && d.contains("//"))
        .ok_or_else(|| Error::usage(format!("{url:?}: the URL names no file")))?;
    let stem = match file.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => file,
    };
    Ok(format!("{dir}/{stem}"))
}

impl Reader {
    /// Opens an object at an `http(s)://` or `s3://` URL; see
    /// [`crate::remote`].
    pub fn open_url(url: &str) -> Result<Reader> {
        open_url(url, &[], OpenOptions::default())
    }
}
