//! The reader over a [`RangeSource`]: what opening and reading fetch (with
//! an in-process source that counts ranges and bytes), and that bodies of
//! the wrong length are errors. The HTTP and S3 sources are exercised
//! against loopback servers in `python/tests/test_remote.py`.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use ztensor::remote::{RangeSource, TAIL_BYTES};
use ztensor::{Error, OpenOptions, Reader, WriteOptions, Writer, ZstdOptions};

struct Counting {
    data: Vec<u8>,
    batches: AtomicU64,
    ranges: AtomicU64,
    bytes: AtomicU64,
    /// Added to every body's length (negative: cut short).
    skew: i64,
}

impl Counting {
    fn new(data: Vec<u8>, skew: i64) -> Arc<Counting> {
        Arc::new(Counting {
            data,
            batches: AtomicU64::new(0),
            ranges: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            skew,
        })
    }
    fn take(&self) -> (u64, u64, u64) {
        (
            self.batches.swap(0, Ordering::Relaxed),
            self.ranges.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
        )
    }
}

impl RangeSource for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn fetch(&self, ranges: &[Range<u64>]) -> ztensor::Result<Vec<Vec<u8>>> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(ranges
            .iter()
            .map(|r| {
                let mut b = self.data[r.start as usize..r.end as usize].to_vec();
                if self.skew < 0 {
                    b.truncate(b.len().saturating_sub(self.skew.unsigned_abs() as usize));
                } else {
                    b.resize(b.len() + self.skew as usize, 0);
                }
                self.ranges.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                b
            })
            .collect())
    }
}

const ROWS: u64 = 1024;
const COLS: u64 = 1024;

/// A file with a 4 MiB raw tensor and a 4 MiB zstd one (1 MiB frames).
fn model() -> (Vec<u8>, Vec<f32>) {
    // Sixteen pseudo-random levels: compresses to about a third, so the
    // zstd part's frames and seek table lie outside the tail read at open.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let values: Vec<f32> = (0..ROWS * COLS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 16) as f32
        })
        .collect();
    let mut w = Writer::in_memory(WriteOptions::default()).unwrap();
    w.add("raw", &[ROWS, COLS], &values).unwrap();
    w.set_defaults(Some(ZstdOptions::default()), Some(ztensor::DigestAlg::Xxh3))
        .unwrap();
    w.add("packed", &[ROWS, COLS], &values).unwrap();
    (w.finish_bytes().unwrap(), values)
}

#[test]
fn open_and_reads_fetch_only_what_they_need() {
    let (bytes, values) = model();
    let src = Counting::new(bytes.clone(), 0);
    let r = Reader::open_source(src.clone(), OpenOptions::default()).unwrap();
    let (batches, ranges, fetched) = src.take();
    assert_eq!((batches, ranges), (1, 2), "head and tail in one batch");
    assert!(fetched <= 64 + TAIL_BYTES);

    let raw = r.read_dense("raw").unwrap();
    assert_eq!(raw.to_vec::<f32>().unwrap(), values);
    let (batches, _, fetched) = src.take();
    assert_eq!((batches, fetched), (1, ROWS * COLS * 4));

    let rows = r.read_rows("packed", 300..310).unwrap();
    let want = &values[(300 * COLS) as usize..(310 * COLS) as usize];
    assert_eq!(rows.to_vec::<f32>().unwrap(), want);
    let (batches, _, fetched) = src.take();
    let blob = r.object("packed").unwrap().parts["data"].blob.length;
    assert_eq!(batches, 2, "the seek table, then the covering frame");
    assert!(fetched < blob / 2, "{fetched} of {blob}");

    assert_eq!(
        r.verify().unwrap(),
        Reader::from_bytes(bytes).unwrap().verify().unwrap()
    );
}

#[test]
fn bodies_of_the_wrong_length_are_io_errors() {
    let (bytes, _) = model();
    for skew in [-1, 1] {
        let e = Reader::open_source(Counting::new(bytes.clone(), skew), OpenOptions::default())
            .unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("the server returned"), "{e}");
    }
}
