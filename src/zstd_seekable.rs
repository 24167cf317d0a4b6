//! The `zt.zstd-seekable/1` encoding: independent zstd frames (each with a
//! content checksum) followed by a skippable-frame seek table.
//!
//! Frames are compressed and decompressed in parallel with rayon. Decoding
//! trusts the manifest's `decoded_length`, never the frame headers: the
//! output buffer has exactly that size, every frame must fill exactly its
//! slot, and a ranged read decodes only the frames that cover the range.

use crate::error::{Error, Result, Rule};
use rayon::prelude::*;
use zstd::zstd_safe;

/// Largest frame content the profile allows.
pub const MAX_FRAME_SIZE: usize = 16 << 20;
/// Default frame content size.
pub const DEFAULT_FRAME_SIZE: usize = 1 << 20;
/// Default zstd level.
pub const DEFAULT_LEVEL: i32 = 3;

const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
const SEEK_FOOTER: usize = 9;
/// A window large enough for any ≤ 16 MiB frame; larger requests fail.
const WINDOW_LOG_MAX: u32 = 25;

/// Compression settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstdOptions {
    pub level: i32,
    pub frame_size: usize,
}

impl Default for ZstdOptions {
    fn default() -> Self {
        ZstdOptions {
            level: DEFAULT_LEVEL,
            frame_size: DEFAULT_FRAME_SIZE,
        }
    }
}

impl ZstdOptions {
    pub fn level(level: i32) -> ZstdOptions {
        ZstdOptions {
            level,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(1..=22).contains(&self.level) {
            return Err(Error::usage(format!(
                "zstd level must be 1-22, got {}",
                self.level
            )));
        }
        if self.frame_size == 0 || self.frame_size > MAX_FRAME_SIZE {
            return Err(Error::usage(format!(
                "zstd frame size must be 1..={MAX_FRAME_SIZE} bytes, got {}",
                self.frame_size
            )));
        }
        Ok(())
    }
}

/// Compresses one frame with a content checksum.
pub fn compress_frame(data: &[u8], level: i32) -> Result<Vec<u8>> {
    let mut c = zstd::bulk::Compressor::new(level)
        .map_err(|e| Error::io("creating a zstd compressor", e))?;
    c.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))
        .map_err(|e| Error::io("configuring zstd", e))?;
    c.compress(data)
        .map_err(|e| Error::io("compressing a zstd frame", e))
}

/// Compresses frames in parallel, keeping their order.
pub fn compress_frames(chunks: &[&[u8]], level: i32) -> Result<Vec<Vec<u8>>> {
    chunks
        .par_iter()
        .map(|c| compress_frame(c, level))
        .collect()
}

/// Builds the seek table for frames of `(compressed, decompressed)` sizes.
pub fn seek_table(frames: &[(u32, u32)]) -> Vec<u8> {
    let body = frames.len() * 8 + SEEK_FOOTER;
    let mut out = Vec::with_capacity(8 + body);
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&(body as u32).to_le_bytes());
    for (c, d) in frames {
        out.extend_from_slice(&c.to_le_bytes());
        out.extend_from_slice(&d.to_le_bytes());
    }
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.push(0); // descriptor: no per-frame checksum column
    out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
    out
}

/// Encodes a whole buffer (frames in parallel).
pub fn encode(data: &[u8], opts: ZstdOptions) -> Result<Vec<u8>> {
    opts.validate()?;
    let chunks: Vec<&[u8]> = data.chunks(opts.frame_size).collect();
    let frames = compress_frames(&chunks, opts.level)?;
    let total: usize = frames.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total + 8 + SEEK_FOOTER + frames.len() * 8);
    let mut sizes = Vec::with_capacity(frames.len());
    for (f, c) in frames.iter().zip(&chunks) {
        out.extend_from_slice(f);
        sizes.push((f.len() as u32, c.len() as u32));
    }
    out.extend_from_slice(&seek_table(&sizes));
    Ok(out)
}

/// One frame's place in the encoded and decoded streams.
#[derive(Debug, Clone, Copy)]
struct Frame {
    stored_start: usize,
    stored_len: usize,
    decoded_start: u64,
    decoded_len: usize,
}

/// The validated seek table of an encoded part.
#[derive(Debug)]
pub struct SeekTable {
    frames: Vec<Frame>,
    frame_size: u64,
    decoded_length: u64,
}

fn table_err(detail: impl Into<String>) -> Error {
    Error::corrupt(Rule::ZstdSeekTable, detail)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl SeekTable {
    /// Parses and checks the seek table against the whole stored part.
    pub fn parse(stored: &[u8], decoded_length: u64) -> Result<SeekTable> {
        SeekTable::parse_suffix(stored, stored.len() as u64, decoded_length)
    }

    /// Bytes the seek table occupies at the end of a part, from the part's
    /// last 9 bytes (`None` when fewer are given); checked by `parse_suffix`.
    pub fn table_len(suffix: &[u8]) -> Option<u64> {
        let foot = suffix.len().checked_sub(SEEK_FOOTER)?;
        let entry = if suffix[foot + 4] & 0x80 != 0 { 12 } else { 8 };
        Some(le_u32(suffix, foot) as u64 * entry + SEEK_FOOTER as u64 + 8)
    }

    /// Parses and checks the seek table from `suffix`, the last bytes of a
    /// stored part of `stored_len` bytes (all of it, or at least the table:
    /// see [`SeekTable::table_len`]), so a remote reader fetches the table
    /// alone and then only the frames it needs.
    pub fn parse_suffix(suffix: &[u8], stored_len: u64, decoded_length: u64) -> Result<SeekTable> {
        let total = usize::try_from(stored_len)
            .ok()
            .filter(|&t| t >= suffix.len())
            .ok_or_else(|| table_err("part is larger than this platform addresses"))?;
        let base = total - suffix.len();
        // Reads a u32 at absolute position `at` of the part (checked to lie
        // in the suffix before each use below).
        let u32_at = |at: usize| le_u32(suffix, at - base);
        if total < 8 + SEEK_FOOTER || suffix.len() < SEEK_FOOTER {
            return Err(table_err(format!(
                "encoded part is {total} bytes, too short for a seek table"
            )));
        }
        let foot = total - SEEK_FOOTER;
        if u32_at(foot + 5) != SEEKABLE_MAGIC {
            return Err(table_err("seekable magic missing at the end of the part"));
        }
        let descriptor = suffix[foot + 4 - base];
        if descriptor & 0x7c != 0 {
            return Err(table_err(format!(
                "reserved descriptor bits set: {descriptor:#04x}"
            )));
        }
        let entry = if descriptor & 0x80 != 0 { 12u64 } else { 8 };
        let n = u32_at(foot) as u64;
        let body = n * entry + SEEK_FOOTER as u64; // ≤ 2^32·12: no overflow
        let table_len = body + 8;
        if table_len > total as u64 {
            return Err(table_err(format!(
                "seek table of {n} frames needs {table_len} bytes, the part has {total}"
            )));
        }
        if table_len > suffix.len() as u64 {
            return Err(Error::usage(format!(
                "seek table of {table_len} bytes, {} given",
                suffix.len()
            )));
        }
        let table_start = total - table_len as usize;
        if u32_at(table_start) != SKIPPABLE_MAGIC {
            return Err(table_err(
                "skippable frame magic missing before the seek table",
            ));
        }
        if u32_at(table_start + 4) as u64 != body {
            return Err(table_err(
                "skippable frame size does not match the seek table",
            ));
        }
        let mut frames = Vec::new();
        frames
            .try_reserve_exact(n as usize)
            .map_err(|_| table_err("seek table too large to allocate"))?;
        let (mut s, mut d) = (0usize, 0u64);
        let mut at = table_start + 8;
        for _ in 0..n {
            let c_len = u32_at(at) as usize;
            let d_len = u32_at(at + 4) as usize;
            at += entry as usize;
            if d_len > MAX_FRAME_SIZE {
                return Err(table_err(format!(
                    "frame content of {d_len} bytes exceeds 16 MiB"
                )));
            }
            frames.push(Frame {
                stored_start: s,
                stored_len: c_len,
                decoded_start: d,
                decoded_len: d_len,
            });
            s = s
                .checked_add(c_len)
                .ok_or_else(|| table_err("compressed sizes overflow"))?;
            d = d
                .checked_add(d_len as u64)
                .ok_or_else(|| table_err("decoded sizes overflow"))?;
        }
        if s != table_start {
            return Err(table_err(format!(
                "frames cover {s} bytes, but {table_start} bytes precede the seek table"
            )));
        }
        if d != decoded_length {
            return Err(Error::corrupt(
                Rule::ZstdLength,
                format!("frames decode to {d} bytes, decoded_length is {decoded_length}"),
            ));
        }
        let frame_size = frames.first().map_or(0, |f| f.decoded_len as u64);
        if let Some((_, rest)) = frames.split_last() {
            if rest.iter().any(|f| f.decoded_len as u64 != frame_size) {
                return Err(table_err("frames other than the last differ in size"));
            }
        }
        if frames.len() > 1
            && (frame_size == 0 || frames[frames.len() - 1].decoded_len as u64 > frame_size)
        {
            return Err(table_err("the last frame is larger than the others"));
        }
        Ok(SeekTable {
            frames,
            frame_size,
            decoded_length,
        })
    }

    pub fn num_frames(&self) -> usize {
        self.frames.len()
    }

    pub fn decoded_length(&self) -> u64 {
        self.decoded_length
    }

    /// Decoded size of every frame but the last.
    pub fn frame_size(&self) -> u64 {
        self.frame_size
    }

    /// The stored bytes (offsets within the part) of the frames covering
    /// decoded bytes `[start, end)`: all a reader needs to fetch.
    pub fn stored_span(&self, start: u64, end: u64) -> std::ops::Range<u64> {
        let frames = &self.frames[self.covering(start, end)];
        match (frames.first(), frames.last()) {
            (Some(f), Some(l)) => f.stored_start as u64..(l.stored_start + l.stored_len) as u64,
            _ => 0..0,
        }
    }

    /// Indices of the frames covering decoded bytes `[start, end)`.
    fn covering(&self, start: u64, end: u64) -> std::ops::Range<usize> {
        if start >= end || self.frame_size == 0 {
            return 0..0;
        }
        let first = (start / self.frame_size) as usize;
        let last = ((end - 1) / self.frame_size) as usize;
        first.min(self.frames.len())..(last + 1).min(self.frames.len())
    }
}

fn decode_frame(
    dctx: &mut Option<zstd::bulk::Decompressor<'static>>,
    src: &[u8],
    dst: &mut [u8],
) -> Result<()> {
    let frame_err = |d: String| Error::corrupt(Rule::ZstdFrame, d);
    if src.len() < 5 || le_u32(src, 0) != ZSTD_MAGIC {
        return Err(frame_err("frame does not start with the zstd magic".into()));
    }
    if src[4] & 0x04 == 0 {
        return Err(frame_err("frame has no content checksum".into()));
    }
    match zstd_safe::find_frame_compressed_size(src) {
        Ok(n) if n == src.len() => {}
        Ok(n) => {
            return Err(frame_err(format!(
                "seek table says {} bytes, the frame is {n}",
                src.len()
            )))
        }
        Err(code) => {
            return Err(frame_err(format!(
                "malformed frame: {}",
                zstd_safe::get_error_name(code)
            )))
        }
    }
    if dctx.is_none() {
        let mut d =
            zstd::bulk::Decompressor::new().map_err(|e| Error::io("creating a zstd decoder", e))?;
        d.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(WINDOW_LOG_MAX))
            .map_err(|e| Error::io("configuring zstd", e))?;
        *dctx = Some(d);
    }
    let Some(d) = dctx.as_mut() else {
        return Err(frame_err("no decoder".into()));
    };
    let want = dst.len();
    let got = d.decompress_to_buffer(src, dst).map_err(|e| {
        frame_err(format!(
            "frame does not decode into its {want}-byte slot: {e}"
        ))
    })?;
    if got != want {
        return Err(Error::corrupt(
            Rule::ZstdLength,
            format!("frame decoded to {got} bytes, the seek table says {want}"),
        ));
    }
    Ok(())
}

/// Decodes the whole part into exactly `decoded_length` bytes, in parallel.
pub fn decode(stored: &[u8], decoded_length: u64) -> Result<Vec<u8>> {
    decode_range(stored, decoded_length, 0, decoded_length)
}

/// Decodes bytes `[start, end)` of the decoded stream, touching only the
/// frames that cover them.
pub fn decode_range(stored: &[u8], decoded_length: u64, start: u64, end: u64) -> Result<Vec<u8>> {
    if start > end || end > decoded_length {
        return Err(Error::usage(format!(
            "range {start}..{end} is outside the part's {decoded_length} bytes"
        )));
    }
    let table = SeekTable::parse(stored, decoded_length)?;
    let span = table.stored_span(start, end);
    decode_span(
        &table,
        &stored[span.start as usize..span.end as usize],
        start,
        end,
    )
}

/// Decodes bytes `[start, end)` from `span`, the stored bytes
/// [`SeekTable::stored_span`] names for that range.
pub fn decode_span(table: &SeekTable, span: &[u8], start: u64, end: u64) -> Result<Vec<u8>> {
    if start > end || end > table.decoded_length {
        return Err(Error::usage(format!(
            "range {start}..{end} is outside the part's {} bytes",
            table.decoded_length
        )));
    }
    let expected = table.stored_span(start, end);
    if span.len() as u64 != expected.end - expected.start {
        return Err(Error::usage(format!(
            "{} stored bytes given for frames of {}",
            span.len(),
            expected.end - expected.start
        )));
    }
    let frames = &table.frames[table.covering(start, end)];
    let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
        return Ok(Vec::new());
    };
    let span_start = first.decoded_start;
    let span_len = usize::try_from(last.decoded_start + last.decoded_len as u64 - span_start)
        .map_err(|_| Error::usage("range too large for this platform"))?;
    if span_len as u64 > isize::MAX as u64 {
        return Err(Error::Limit {
            what: "decoded allocation".into(),
            value: span_len as u64,
            limit: isize::MAX as u64,
        });
    }
    // A zeroed allocation comes from calloc/mmap: its pages are faulted in
    // by the decoding threads in parallel rather than zeroed serially here.
    let mut out = vec![0u8; span_len];
    advise_huge_pages(&mut out);
    decode_frames_into(span, expected.start as usize, frames, &mut out)?;
    let cut_start = (start - span_start) as usize;
    let cut_end = (end - span_start) as usize;
    if cut_start == 0 && cut_end == out.len() {
        return Ok(out);
    }
    Ok(out[cut_start..cut_end].to_vec())
}

/// Decodes the whole part into `out`, which must be exactly
/// `decoded_length` bytes (frames in parallel, each into its own slot).
pub fn decode_into(stored: &[u8], decoded_length: u64, out: &mut [u8]) -> Result<()> {
    if out.len() as u64 != decoded_length {
        return Err(Error::usage(format!(
            "output buffer is {} bytes, the part decodes to {decoded_length}",
            out.len()
        )));
    }
    let table = SeekTable::parse(stored, decoded_length)?;
    decode_frames_into(stored, 0, &table.frames, out)
}

/// Decodes consecutive `frames` into `out` (their total decoded size), in
/// parallel, each frame into its own slot; `stored` holds the part's bytes
/// from offset `base` on.
fn decode_frames_into(stored: &[u8], base: usize, frames: &[Frame], out: &mut [u8]) -> Result<()> {
    let mut slots: Vec<(&Frame, &mut [u8])> = Vec::with_capacity(frames.len());
    let mut rest: &mut [u8] = out;
    for f in frames {
        let (head, tail) = rest.split_at_mut(f.decoded_len);
        slots.push((f, head));
        rest = tail;
    }
    slots.into_par_iter().try_for_each_init(
        || None,
        |dctx, (f, dst)| {
            let src = &stored[f.stored_start - base..f.stored_start - base + f.stored_len];
            decode_frame(dctx, src, dst)
        },
    )
}

/// Asks the kernel to back a large fresh buffer with transparent huge pages,
/// so the decoding threads take one fault per 2 MiB instead of per 4 KiB.
/// Purely advisory: failure changes nothing.
pub fn advise_huge_pages(buf: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if buf.len() < 4 * HUGE {
            return;
        }
        let start = buf.as_mut_ptr() as usize;
        let aligned = (start + HUGE - 1) & !(HUGE - 1);
        let end = (start + buf.len()) & !(HUGE - 1);
        if end > aligned {
            // SAFETY: [aligned, end) lies inside `buf`, which we borrow
            // mutably; MADV_HUGEPAGE only changes how the kernel backs the
            // pages, never their contents, and cannot invalidate the range.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// Checks every frame of the part (decoding it) without keeping the output.
pub fn verify(stored: &[u8], decoded_length: u64) -> Result<()> {
    decode(stored, decoded_length).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i * 31) % 251) as u8 ^ (i >> 10) as u8)
            .collect()
    }

    fn opts(level: i32, frame_size: usize) -> ZstdOptions {
        ZstdOptions { level, frame_size }
    }

    #[test]
    fn round_trip_various_sizes() {
        for n in [0usize, 1, 4095, 4096, 4097, 3 * 4096 + 5] {
            let data = sample(n);
            let enc = encode(&data, opts(3, 4096)).unwrap();
            assert_eq!(decode(&enc, n as u64).unwrap(), data, "n={n}");
        }
    }

    #[test]
    fn ranged_decode_equals_slicing() {
        let data = sample(10 * 1000 + 7);
        let enc = encode(&data, opts(1, 1000)).unwrap();
        for (a, b) in [
            (0, 1),
            (999, 1001),
            (5000, 5000),
            (0, data.len()),
            (9999, 10007),
            (3, 2999),
        ] {
            let got = decode_range(&enc, data.len() as u64, a as u64, b as u64).unwrap();
            assert_eq!(got, &data[a..b], "{a}..{b}");
        }
        assert!(decode_range(&enc, data.len() as u64, 0, data.len() as u64 + 1).is_err());
    }

    #[test]
    fn wrong_decoded_length_is_rejected() {
        let data = sample(5000);
        let enc = encode(&data, opts(3, 1024)).unwrap();
        assert_eq!(
            decode(&enc, 4999).unwrap_err().rule(),
            Some(Rule::ZstdLength)
        );
        assert_eq!(
            decode(&enc, 5001).unwrap_err().rule(),
            Some(Rule::ZstdLength)
        );
    }

    #[test]
    fn every_flipped_byte_is_an_error_or_exact() {
        let data = sample(3000);
        let enc = encode(&data, opts(3, 1024)).unwrap();
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x5a;
            // Never a panic; never wrong data.
            if let Ok(out) = decode(&bad, 3000) {
                assert_eq!(out, data, "byte {i} changed the output silently");
            }
        }
    }

    #[test]
    fn a_bomb_frame_cannot_exceed_its_slot() {
        // One frame that inflates to 1 MiB, with a seek table claiming 4 KiB.
        let big = vec![0u8; 1 << 20];
        let f = compress_frame(&big, 3).unwrap();
        let mut enc = f.clone();
        enc.extend_from_slice(&seek_table(&[(f.len() as u32, 4096)]));
        let err = decode(&enc, 4096).unwrap_err();
        assert_eq!(err.rule(), Some(Rule::ZstdFrame));
    }

    #[test]
    fn frames_without_checksums_are_rejected() {
        let data = sample(100);
        let f = zstd::bulk::compress(&data, 3).unwrap();
        let mut enc = f.clone();
        enc.extend_from_slice(&seek_table(&[(f.len() as u32, 100)]));
        assert_eq!(decode(&enc, 100).unwrap_err().rule(), Some(Rule::ZstdFrame));
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(encode(b"x", opts(0, 10)).is_err());
        assert!(encode(b"x", opts(23, 10)).is_err());
        assert!(encode(b"x", opts(3, 0)).is_err());
        assert!(encode(b"x", opts(3, MAX_FRAME_SIZE + 1)).is_err());
    }
}
