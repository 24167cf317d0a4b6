//! Streamed parts: [`PartSink`] (any part, optionally compressed frame by
//! frame) and [`DenseSink`] (a dense tensor of a known shape).

use super::objects::dense_object;
use super::Writer;
use crate::digest::{DigestString, Hasher};
use crate::dtype::ElementType;
use crate::error::{Error, Result};
use crate::manifest::{Blob, Part, ZSTD_SEEKABLE};
use crate::zstd_seekable::{self, ZstdOptions};

pub(super) struct ZstdState {
    pub(super) opts: ZstdOptions,
    pub(super) pending: Vec<u8>,
    pub(super) frames: Vec<(u32, u32)>,
}

/// A part being streamed into the file.
pub struct PartSink<'w> {
    pub(super) writer: &'w mut Writer,
    pub(super) etype: ElementType,
    pub(super) offset: u64,
    pub(super) decoded: u64,
    pub(super) hasher: Option<Hasher>,
    pub(super) zstd: Option<ZstdState>,
}

impl<'w> PartSink<'w> {
    /// Frames compressed per parallel batch.
    fn batch_frames() -> usize {
        2 * rayon::current_num_threads().max(1)
    }

    /// Feeds the next chunk of decoded bytes.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        if let Some(h) = &mut self.hasher {
            h.update(chunk);
        }
        self.decoded += chunk.len() as u64;
        match &mut self.zstd {
            None => self.writer.put(chunk),
            Some(z) => {
                z.pending.extend_from_slice(chunk);
                let batch = z.opts.frame_size * PartSink::batch_frames();
                if z.pending.len() >= batch {
                    self.flush_frames(false)?;
                }
                Ok(())
            }
        }
    }

    /// Compresses pending full frames (all of them when `last`) in parallel.
    fn flush_frames(&mut self, last: bool) -> Result<()> {
        let Some(z) = &mut self.zstd else {
            return Ok(());
        };
        let fs = z.opts.frame_size;
        let take = if last {
            z.pending.len()
        } else {
            z.pending.len() / fs * fs
        };
        if take == 0 {
            return Ok(());
        }
        let chunks: Vec<&[u8]> = z.pending[..take].chunks(fs).collect();
        let frames = zstd_seekable::compress_frames(&chunks, z.opts.level)?;
        let sizes: Vec<(u32, u32)> = frames
            .iter()
            .zip(&chunks)
            .map(|(f, c)| (f.len() as u32, c.len() as u32))
            .collect();
        z.frames.extend(sizes);
        z.pending.drain(..take);
        for f in frames {
            self.writer.put(&f)?;
        }
        Ok(())
    }

    /// Bytes fed so far.
    pub fn written(&self) -> u64 {
        self.decoded
    }

    /// Ends the part and returns its manifest entry.
    pub fn finish(self) -> Result<Part> {
        self.finish_inner().map(|(part, _)| part)
    }

    fn finish_inner(mut self) -> Result<(Part, &'w mut Writer)> {
        let mut encoding = None;
        if self.zstd.is_some() {
            self.flush_frames(true)?;
            let table = self
                .zstd
                .as_ref()
                .map(|z| zstd_seekable::seek_table(&z.frames))
                .unwrap_or_default();
            self.writer.put(&table)?;
            encoding = Some(ZSTD_SEEKABLE.to_string());
        }
        let digest = match self.hasher.take() {
            Some(h) => Some(DigestString::parse(&h.finish()).map_err(Error::usage)?),
            None => None,
        };
        let PartSink {
            writer,
            etype,
            offset,
            decoded,
            ..
        } = self;
        let part = Part {
            etype,
            blob: Blob {
                offset,
                length: writer.pos - offset,
            },
            shard: None,
            decoded_length: encoding.as_ref().map(|_| decoded),
            encoding,
            digest,
        };
        Ok((part, writer))
    }
}

/// A dense tensor being streamed; see [`Writer::stream_dense`].
pub struct DenseSink<'w> {
    pub(super) name: String,
    pub(super) shape: Vec<u64>,
    pub(super) expected: u64,
    pub(super) sink: PartSink<'w>,
}

impl DenseSink<'_> {
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        if self.sink.written() + chunk.len() as u64 > self.expected {
            return Err(Error::usage(format!(
                "{}: more than the {} bytes its shape needs",
                self.name, self.expected
            )));
        }
        self.sink.write(chunk)
    }

    /// Ends the tensor and adds it to the file.
    pub fn finish(self) -> Result<()> {
        if self.sink.written() != self.expected {
            return Err(Error::usage(format!(
                "{}: got {} bytes, its shape needs {}",
                self.name,
                self.sink.written(),
                self.expected
            )));
        }
        let DenseSink {
            name, shape, sink, ..
        } = self;
        let (part, writer) = sink.finish_inner()?;
        writer.add_object(&name, dense_object(&shape, part, None))
    }
}

impl std::io::Write for DenseSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        DenseSink::write(self, buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
