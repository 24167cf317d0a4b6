//! # ztensor
//!
//! Read and write `.zt` tensor containers: the public ztensor container v2
//! layout ("Draft 4"), so files open in upstream `ztensor` 2.x and back.
//!
//! - **Layouts**: dense (12 storage dtypes plus the logical types bool,
//!   fp8, f4_e2m1, complex64/128), `zt.sparse_csr/1`, `zt.sparse_coo/1`,
//!   and opaque ggml blocks `gguf.<type>/1`.
//! - **Encoding**: `zt.zstd-seekable/1`, compressed and decompressed in
//!   parallel, with ranged decoding.
//! - **Integrity**: xxh3 / sha256 / crc32c / blake3 digests over decoded
//!   bytes; every structural rule of the format checked at open, each
//!   failure naming a stable [`Rule`].
//! - **I/O**: zero-copy reads from a memory map, `pread` or memory;
//!   streaming and append writes; atomic, durable saves.
//!
//! ```no_run
//! use ztensor::{Reader, Writer};
//! # fn main() -> ztensor::Result<()> {
//! let mut w = Writer::create("model.zt")?;
//! w.add("weight", &[2, 2], &[1.0f32, 2.0, 3.0, 4.0])?;
//! w.finish()?;
//!
//! let r = Reader::open("model.zt")?;
//! let t = r.read_dense("weight")?;
//! assert_eq!(t.as_slice::<f32>()?, &[1.0, 2.0, 3.0, 4.0]);
//! # Ok(()) }
//! ```

pub mod cbor;
pub mod container;
pub mod convert;
pub mod digest;
pub mod dtype;
pub mod element;
#[cfg(feature = "engine")]
pub mod engine;
mod error;
pub mod fingerprint;
pub mod formats;
#[doc(hidden)]
pub mod fuzzing;
pub mod layout;
pub mod manifest;
pub mod npy;
pub mod reader;
pub mod remote;
#[cfg(feature = "server")]
pub mod server;
mod store;
pub mod writer;
pub mod zstd_seekable;

pub use cbor::Value;
pub use digest::DigestAlg;
pub use dtype::{DType, ElementType, Logical, LogicalType};
pub use element::Element;
pub use error::{Error, Result, Rule, SnapshotFault};
pub use manifest::{Blob, Manifest, Object, Part};
pub use reader::{
    CooTensor, CsrTensor, LoadOptions, OpenOptions, Reader, TensorData, VerifyReport,
};
pub use store::Backend;
pub use writer::{AtomicFile, DenseSink, PartOptions, PartSink, WriteOptions, Writer};
pub use zstd_seekable::ZstdOptions;
