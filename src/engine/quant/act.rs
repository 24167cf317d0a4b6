//! Activations quantized to int8 for the integer kernels: per block of 32
//! (q8_0, q4_0, q4_1, q5_0, q5_1) or super-block of 256 (q2_k … q6_k) one f32 scale, with the
//! sums of the quants the kernels need for offset formats.

use super::WeightType;

/// How activations are grouped for a weight type's integer kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActBlocks {
    /// 32 values per scale; `s` holds each block's Σq.
    #[default]
    B32,
    /// 256 values per scale; `s` holds Σq of every 16.
    K256,
}

impl ActBlocks {
    pub(crate) fn len(self) -> usize {
        match self {
            ActBlocks::B32 => 32,
            ActBlocks::K256 => 256,
        }
    }

    fn sum_len(self) -> usize {
        match self {
            ActBlocks::B32 => 32,
            ActBlocks::K256 => 16,
        }
    }
}

/// The activation layout of a weight type's integer kernel, or `None`
/// when the type has none (it then takes the f32 path).
pub fn act_blocks(t: WeightType) -> Option<ActBlocks> {
    match t {
        WeightType::Q8_0
        | WeightType::Q4_0
        | WeightType::Q4_1
        | WeightType::Q5_0
        | WeightType::Q5_1 => Some(ActBlocks::B32),
        WeightType::Q2K | WeightType::Q3K | WeightType::Q4K | WeightType::Q5K | WeightType::Q6K => {
            Some(ActBlocks::K256)
        }
        _ => None,
    }
}

/// Whether the integer path covers a weight type for rows of `cols`.
pub fn supports(t: WeightType, cols: usize) -> bool {
    act_blocks(t).is_some_and(|b| cols.is_multiple_of(b.len()) && cols > 0)
}

/// One or more activation vectors of `cols` values, quantized.
#[derive(Debug, Default, Clone)]
pub struct QAct {
    pub blocks: ActBlocks,
    pub cols: usize,
    pub d: Vec<f32>,
    pub q: Vec<i8>,
    /// Σq per 32 (B32) or per 16 (K256); at most 32 · 127, so i16.
    pub s: Vec<i16>,
    /// The same activations laid out for the prefill GEMM (filled only
    /// when a matmul takes it).
    pub panel: super::ActPanel,
}

/// One quantized vector of a [`QAct`].
#[derive(Debug, Clone, Copy)]
pub struct QRow<'a> {
    /// Scale of each block.
    pub d: &'a [f32],
    pub q: &'a [i8],
    /// Σq per 32 (B32) or per 16 (K256).
    pub s: &'a [i16],
}

impl QAct {
    /// Quantizes the vectors of `x` (each `cols` long, `cols` a multiple
    /// of the block length): per block `d = max|x| / 127`, `q = round(x / d)`.
    pub fn quantize(&mut self, blocks: ActBlocks, x: &[f32], cols: usize) {
        let (bl, sl) = (blocks.len(), blocks.sum_len());
        self.blocks = blocks;
        self.cols = cols;
        self.d.clear();
        self.s.clear();
        self.q.resize(x.len(), 0);
        for (xs, qs) in x.chunks_exact(bl).zip(self.q.chunks_exact_mut(bl)) {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (o, v) in qs.iter_mut().zip(xs) {
                *o = (v * id).round().clamp(-127.0, 127.0) as i8;
            }
            self.d.push(d);
            self.s.extend(
                qs.chunks_exact(sl)
                    .map(|c| c.iter().map(|&q| q as i16).sum::<i16>()),
            );
        }
    }

    /// Number of vectors.
    pub fn rows(&self) -> usize {
        self.q.len().checked_div(self.cols).unwrap_or(0)
    }

    /// Vector `i`.
    pub fn row(&self, i: usize) -> QRow<'_> {
        let nd = self.cols / self.blocks.len();
        let ns = self.cols / self.blocks.sum_len();
        QRow {
            d: &self.d[i * nd..(i + 1) * nd],
            q: &self.q[i * self.cols..(i + 1) * self.cols],
            s: &self.s[i * ns..(i + 1) * ns],
        }
    }
}
