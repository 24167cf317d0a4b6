//! Writer settings: file-wide [`WriteOptions`] and per-part [`PartOptions`].

use crate::container::{ALIGN_FLOOR, CANONICAL_ALIGN};
use crate::digest::DigestAlg;
use crate::dtype::ElementType;
use crate::error::{Error, Result};
use crate::zstd_seekable::ZstdOptions;

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Blob placement; a multiple of 4096 (default 4096).
    pub align: u64,
    /// Canonical form: 64 KiB placement, sorted names, raw parts with xxh3
    /// digests, identical parts stored once, NFC names, single file.
    pub canonical: bool,
    /// Default digest for parts (`None`: no digest).
    pub digest: Option<DigestAlg>,
    /// Default compression for parts (`None`: raw).
    pub compression: Option<ZstdOptions>,
    /// Store byte-identical raw parts once (always on when canonical).
    pub dedup: bool,
    /// fsync the file and directory before returning from `finish`.
    pub durable: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            align: ALIGN_FLOOR,
            canonical: false,
            digest: Some(DigestAlg::Xxh3),
            compression: None,
            dedup: false,
            durable: true,
        }
    }
}

impl WriteOptions {
    pub fn canonical() -> WriteOptions {
        WriteOptions {
            align: CANONICAL_ALIGN,
            canonical: true,
            digest: Some(DigestAlg::Xxh3),
            compression: None,
            dedup: true,
            durable: true,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.align < ALIGN_FLOOR
            || !self.align.is_multiple_of(ALIGN_FLOOR)
            || !self.align.is_power_of_two()
        {
            return Err(Error::usage(format!(
                "alignment must be a power of two ≥ 4096, got {}",
                self.align
            )));
        }
        if self.canonical {
            if self.align != CANONICAL_ALIGN {
                return Err(Error::usage("canonical form places blobs at 64 KiB"));
            }
            if self.compression.is_some() {
                return Err(Error::usage("canonical form forbids compressed parts"));
            }
            if self.digest != Some(DigestAlg::Xxh3) {
                return Err(Error::usage(
                    "canonical form needs an xxh3 digest on every part",
                ));
            }
        }
        if let Some(z) = &self.compression {
            z.validate()?;
        }
        Ok(())
    }
}

/// Per-part settings; defaults come from the writer's options.
#[derive(Debug, Clone)]
pub struct PartOptions {
    pub etype: ElementType,
    pub compression: Option<ZstdOptions>,
    pub digest: Option<DigestAlg>,
}
