//! Activations laid out for the prefill GEMM
//! (`kernels::int8::gemm`): vectors quantized to int8 per block of 16
//! (`d = max|x| / 127`, as q8_0 does per 32) whatever the weight type,
//! then stored 16 vectors side by side so one 64-byte load holds the same 4 values of
//! 16 vectors — the operand layout of AVX-512 `vpdpbusd` with the weight
//! bytes broadcast. Values are stored as `q + 128` (unsigned, as
//! `vpdpbusd` wants its first operand); the kernels subtract `128 · Σw`.

/// Vectors per group: the 16 int32 lanes of a 512-bit register.
pub const LANES: usize = 16;

/// Values per activation scale. 16 rather than q8_0's 32: each block's
/// step follows a smaller maximum, so the 8-bit activations land closer
/// to the exact ones (the GEMM's weights come in sub-blocks of 16 or 32,
/// so either works for the kernel).
pub const BLOCK: usize = 16;

/// `n` activation vectors of `cols` values (a multiple of 32), quantized
/// per [`BLOCK`] values and interleaved in groups of [`LANES`] vectors.
/// A group's lanes past `n` hold zeros (scale 0).
#[derive(Debug, Default, Clone)]
pub struct ActPanel {
    pub n: usize,
    pub cols: usize,
    /// `[group][cols / 4][lane][4]`: `q + 128`.
    pub q: Vec<u8>,
    /// `[group][cols / 16][lane]`: each block's scale `d`.
    pub d: Vec<f32>,
    /// `[group][cols / 16][lane]`: `d · Σq` of each block.
    pub ds: Vec<f32>,
}

impl ActPanel {
    /// Number of groups of [`LANES`] vectors.
    pub fn groups(&self) -> usize {
        self.n.div_ceil(LANES)
    }

    /// Quantizes the `n` vectors of `x` (each `cols` long; `cols` a
    /// multiple of 32, `x.len() == n · cols`; callers check both).
    pub fn quantize(&mut self, x: &[f32], n: usize, cols: usize) {
        debug_assert!(cols.is_multiple_of(32) && x.len() == n * cols);
        self.n = n;
        self.cols = cols;
        let groups = n.div_ceil(LANES);
        let nb = cols / BLOCK;
        self.q.clear();
        self.q.resize(groups * cols * LANES, 128);
        self.d.clear();
        self.d.resize(groups * nb * LANES, 0.0);
        self.ds.clear();
        self.ds.resize(groups * nb * LANES, 0.0);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            for (v, xs) in x.chunks_exact(cols.max(1)).enumerate().take(n) {
                // SAFETY: AVX-512F was detected; `xs` is whole blocks.
                unsafe { self.vector_avx512(v, xs) };
            }
            return;
        }
        for (v, xs) in x.chunks_exact(cols.max(1)).enumerate().take(n) {
            self.vector_scalar(v, xs);
        }
    }

    /// Stores block `b` of vector `v`: `u` its quants plus 128, `d` its
    /// scale, `sum` the sum of its quants. Its bytes go 4 at a time to
    /// every 64th byte of the vector's group, after the lane's 4-byte slot.
    fn put(&mut self, v: usize, b: usize, u: &[u8; BLOCK], d: f32, sum: i32) {
        let (g, lane) = (v / LANES, v % LANES);
        let base = g * self.cols * LANES + lane * 4 + b * BLOCK * LANES;
        for (k4, four) in u.chunks_exact(4).enumerate() {
            let o = base + k4 * 4 * LANES;
            self.q[o..o + 4].copy_from_slice(four);
        }
        let at = (g * (self.cols / BLOCK) + b) * LANES + lane;
        self.d[at] = d;
        self.ds[at] = d * sum as f32;
    }

    /// The scalar twin: per block `d = max|x| / 127`, `q = x / d` rounded
    /// to nearest, ties to even (as the SIMD conversion rounds).
    fn vector_scalar(&mut self, v: usize, xs: &[f32]) {
        for (b, blk) in xs.chunks_exact(BLOCK).enumerate() {
            let amax = blk.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let q: [i32; BLOCK] =
                std::array::from_fn(|i| ((blk[i] * id).round_ties_even() as i32).clamp(-127, 127));
            let u: [u8; BLOCK] = std::array::from_fn(|i| (q[i] + 128) as u8);
            self.put(v, b, &u, d, q.iter().sum());
        }
    }

    /// # Safety
    /// AVX-512F available; `xs.len()` a multiple of [`BLOCK`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn vector_avx512(&mut self, v: usize, xs: &[f32]) {
        use std::arch::x86_64::*;
        for (b, blk) in xs.chunks_exact(BLOCK).enumerate() {
            // SAFETY: `blk` is 16 floats; `u` is 16 bytes.
            unsafe {
                let x = _mm512_loadu_ps(blk.as_ptr());
                let amax = _mm512_reduce_max_ps(_mm512_abs_ps(x));
                let d = amax / 127.0;
                let id = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
                let q = _mm512_cvtps_epi32(_mm512_mul_ps(x, id));
                let q = _mm512_max_epi32(
                    _mm512_min_epi32(q, _mm512_set1_epi32(127)),
                    _mm512_set1_epi32(-127),
                );
                let mut u = [0u8; BLOCK];
                let biased = _mm512_add_epi32(q, _mm512_set1_epi32(128));
                _mm_storeu_si128(u.as_mut_ptr() as *mut _, _mm512_cvtepi32_epi8(biased));
                self.put(v, b, &u, d, _mm512_reduce_add_epi32(q));
            }
        }
    }

    /// The int8 value of vector `v`, element `e` (the tests' reading of the
    /// layout).
    #[cfg(test)]
    pub fn value(&self, v: usize, e: usize) -> i32 {
        let (g, lane) = (v / LANES, v % LANES);
        self.q[g * self.cols * LANES + (e / 4) * 4 * LANES + lane * 4 + e % 4] as i32 - 128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_the_layout() {
        let (n, cols) = (19, 64);
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut p = ActPanel::default();
        p.quantize(&x, n, cols);
        assert_eq!(p.groups(), 2);
        // The SIMD quantizer (used when present) equals the scalar twin.
        let mut twin = p.clone();
        for (v, xs) in x.chunks_exact(cols).enumerate() {
            twin.vector_scalar(v, xs);
        }
        assert_eq!((&twin.q, &twin.d, &twin.ds), (&p.q, &p.d, &p.ds));
        for v in 0..n {
            for b in 0..cols / BLOCK {
                let d = p.d[((v / LANES) * (cols / BLOCK) + b) * LANES + v % LANES];
                let mut s = 0;
                for i in 0..BLOCK {
                    let e = BLOCK * b + i;
                    let q = p.value(v, e);
                    s += q;
                    assert!((q as f32 * d - x[v * cols + e]).abs() <= d * 0.5 + 1e-6);
                }
                let ds = p.ds[((v / LANES) * (cols / BLOCK) + b) * LANES + v % LANES];
                assert_eq!(ds, d * s as f32);
            }
        }
        // Padding lanes are zero with scale zero.
        assert_eq!(p.value(n, 5), 0);
        assert_eq!(p.d[(cols / BLOCK) * LANES + (n % LANES)], 0.0);
    }
}
