//! Rust element types that map onto storage dtypes, for typed views.

use crate::dtype::DType;
use half::{bf16, f16};

/// A plain-old-data element type stored as one [`DType`].
pub trait Element: bytemuck::Pod {
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {
        $(impl Element for $t { const DTYPE: DType = DType::$d; })*
    };
}

element! {
    f64 => F64, f32 => F32, f16 => F16, bf16 => BF16,
    i64 => I64, i32 => I32, i16 => I16, i8 => I8,
    u64 => U64, u32 => U32, u16 => U16, u8 => U8,
}

/// Reinterprets a typed slice as its little-endian bytes.
/// (Every supported target is little-endian; see the crate docs.)
pub fn as_bytes<T: Element>(data: &[T]) -> &[u8] {
    bytemuck::cast_slice(data)
}

/// Copies bytes into a typed vector (works whatever the alignment).
pub fn to_vec<T: Element>(bytes: &[u8]) -> Vec<T> {
    let n = bytes.len() / std::mem::size_of::<T>();
    let mut out = vec![T::zeroed(); n];
    bytemuck::cast_slice_mut::<T, u8>(&mut out)
        .copy_from_slice(&bytes[..n * std::mem::size_of::<T>()]);
    out
}

#[cfg(target_endian = "big")]
compile_error!(
    "ztensor reads and writes little-endian data in place; big-endian targets are not supported"
);
