//! Weight types the engine computes with, straight from their stored
//! bytes: dense f32/f16/bf16 rows and ggml blocks (Q4_0 … Q8_0, Q2_K …
//! Q6_K). Each type dequantizes one block into f32 (the layouts are
//! ggml's, `ggml-quants.c` `dequantize_row_*`); a row dot product walks the
//! row block by block through a small stack buffer, so no dequantized copy
//! of a weight ever exists.

use half::f16;

/// A weight element type and its block geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

/// Largest block: the K-quants' 256 elements.
pub const MAX_BLOCK: usize = 256;

impl WeightType {
    /// From a `.zt` layout and storage dtype (`dense` + f32/f16/bf16, or
    /// `gguf.<type>/1`).
    pub fn from_layout(layout: &str, dtype: &str) -> Option<WeightType> {
        use WeightType::*;
        Some(match (layout, dtype) {
            ("dense", "f32") => F32,
            ("dense", "f16") => F16,
            ("dense", "bf16") => BF16,
            ("gguf.q4_0/1", _) => Q4_0,
            ("gguf.q4_1/1", _) => Q4_1,
            ("gguf.q5_0/1", _) => Q5_0,
            ("gguf.q5_1/1", _) => Q5_1,
            ("gguf.q8_0/1", _) => Q8_0,
            ("gguf.q2_k/1", _) => Q2K,
            ("gguf.q3_k/1", _) => Q3K,
            ("gguf.q4_k/1", _) => Q4K,
            ("gguf.q5_k/1", _) => Q5K,
            ("gguf.q6_k/1", _) => Q6K,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use WeightType::*;
        match self {
            F32 => "f32",
            F16 => "f16",
            BF16 => "bf16",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q8_0 => "q8_0",
            Q2K => "q2_k",
            Q3K => "q3_k",
            Q4K => "q4_k",
            Q5K => "q5_k",
            Q6K => "q6_k",
        }
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        use WeightType::*;
        match self {
            F32 | F16 | BF16 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 => 32,
            Q2K | Q3K | Q4K | Q5K | Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        use WeightType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q2K => 84,
            Q3K => 110,
            Q4K => 144,
            Q5K => 176,
            Q6K => 210,
        }
    }

    /// Bytes of one row of `n` elements; `None` unless `n` is whole blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_elems()) {
            return None;
        }
        (n / self.block_elems()).checked_mul(self.block_bytes())
    }

    /// Elements decoded per step by [`dequant_chunk`]: a block, or 256
    /// dense values at a time.
    pub fn chunk_elems(self) -> usize {
        match self.block_elems() {
            1 => MAX_BLOCK,
            n => n,
        }
    }
}

/// Every f16 bit pattern as f32 (256 KiB, built once): block scales are
/// converted by lookup, as ggml does.
pub fn f16_table() -> &'static [f32; 65536] {
    static TABLE: std::sync::OnceLock<Box<[f32; 65536]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0f32; 65536]);
        for (b, o) in t.iter_mut().enumerate() {
            *o = f16::from_bits(b as u16).to_f32();
        }
        t
    })
}

#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    f16_table()[bits as usize]
}

/// The f16 at byte `at` of `b`, as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

mod act;
mod decode;
mod panel;
#[cfg(test)]
pub(crate) mod test_rows;
pub use act::{act_blocks, supports, ActBlocks, QAct, QRow};
pub use decode::{dequant_chunk, dequant_row_scalar};
pub(crate) use decode::{q3k_scales, scale_min_k4};
pub use panel::{ActPanel, BLOCK as ACT_BLOCK, LANES};
