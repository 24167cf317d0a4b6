//! The SIMD kernels, each with its scalar twin, and the one table of them
//! this CPU uses, chosen once at start-up from the detected features.
//! Everything above (`matmul`, `attention`) calls kernels through
//! [`get`]; the tests compare every SIMD kernel with its twin.

pub(crate) mod attn;
pub(crate) mod dequant;
pub(crate) mod dot;
pub(crate) mod f32;
pub(crate) mod f32_gemm;
pub(crate) mod int8;

use std::sync::OnceLock;

/// Every kernel the engine calls, for one CPU.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kernels {
    /// What was chosen, for logs and benchmarks.
    pub name: &'static str,
    pub dot: f32::DotFn,
    pub tile4x2: f32::Tile4x2Fn,
    /// The 4 × 4 prefill tile, where the CPU has one.
    pub tile4x4: Option<f32::Tile4x4Fn>,
    pub dequant: dequant::DequantFn,
    pub row_dot: dot::RowDotFn,
    pub int_row_dot: int8::IntDotFn,
    pub int_rows_dot: int8::RowsDotFn,
    /// Several activation vectors against several rows (prefill).
    pub int_tile: int8::tile::TileFn,
    /// Many activation vectors against many rows (long prefills), where
    /// the CPU has AVX-512 VNNI; otherwise those take the f32 tiles.
    pub gemm: Option<int8::gemm::GemmFn>,
    /// Many vectors against many f32 (or dequantized) rows, where the CPU
    /// has AVX-512; otherwise those take the f32 tiles.
    pub f32_gemm: Option<f32_gemm::GemmFn>,
    pub dot_f16: attn::DotF16Fn,
    pub axpy_f16: attn::AxpyF16Fn,
    pub attn_scores: attn::ScoresF16Fn,
    pub attn_mix: attn::MixF16Fn,
}

impl Kernels {
    /// The scalar twins (what every SIMD kernel is tested against).
    pub(crate) fn scalar() -> Kernels {
        Kernels {
            name: "scalar",
            dot: f32::dot_scalar,
            tile4x2: f32::tile4x2_scalar,
            tile4x4: None,
            dequant: crate::engine::quant::dequant_chunk,
            row_dot: dot::row_dot_scalar,
            int_row_dot: int8::row_dot_scalar,
            int_rows_dot: int8::rows_dot_scalar,
            int_tile: int8::tile::tile_scalar,
            gemm: Some(int8::gemm::gemm_scalar),
            f32_gemm: Some(f32_gemm::gemm_scalar),
            dot_f16: attn::dot_f16_scalar,
            axpy_f16: attn::axpy_f16_scalar,
            attn_scores: attn::scores_f16_scalar,
            attn_mix: attn::mix_f16_scalar,
        }
    }

    fn detect() -> Kernels {
        #[allow(unused_mut)]
        let mut k = Kernels::scalar();
        // Without the fused kernels a row dot dequantizes with the best
        // dequantizer and dots with the best dot.
        k.row_dot = dot::generic;
        // The scalar GEMM is slower than the f32 tiles: long prefills take
        // the GEMM only where the CPU has VNNI.
        k.gemm = None;
        k.f32_gemm = None;
        #[cfg(target_arch = "x86_64")]
        {
            let has = |f: &str| match f {
                "avx2" => std::is_x86_feature_detected!("avx2"),
                "fma" => std::is_x86_feature_detected!("fma"),
                "f16c" => std::is_x86_feature_detected!("f16c"),
                "avx512f" => std::is_x86_feature_detected!("avx512f"),
                "avx512vnni" => std::is_x86_feature_detected!("avx512vnni"),
                "avx512vl" => std::is_x86_feature_detected!("avx512vl"),
                _ => false,
            };
            let (avx2, fma, f16c) = (has("avx2"), has("fma"), has("f16c"));
            if avx2 && fma {
                k.name = "avx2+fma";
                k.dot = f32::dot_avx2_safe;
                k.tile4x2 = f32::tile4x2_avx2;
            }
            if avx2 && f16c {
                k.dequant = dequant::x86::dequant_avx2_safe;
            }
            if avx2 && fma && f16c {
                k.row_dot = dot::x86::row_dot_avx2_safe;
                k.int_row_dot = int8::x86::row_dot_avx2_safe;
                k.int_rows_dot = int8::x86::rows_dot_avx2_safe;
                k.int_tile = int8::tile::x86::tile_avx2_safe;
                k.dot_f16 = attn::dot_f16_avx2;
                k.axpy_f16 = attn::axpy_f16_avx2;
                k.attn_scores = attn::scores_f16_avx2;
                k.attn_mix = attn::mix_f16_avx2;
            }
            if has("avx512f") {
                k.tile4x4 = Some(f32::tile4x4_avx512);
                k.f32_gemm = Some(f32_gemm::x86::gemm_avx512_safe);
            }
            if avx2 && fma && f16c && has("avx512vnni") && has("avx512vl") {
                k.name = "avx2+fma+avx512vnni";
                k.int_tile = int8::tile::x86::tile_vnni_safe;
                k.int_rows_dot = int8::x86::rows_dot_vnni_safe;
            }
            if has("avx512f") && has("avx512vnni") {
                k.gemm = Some(int8::gemm::x86::gemm_vnni_safe);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            k.name = "neon";
            k.dot = f32::dot_neon;
        }
        k
    }
}

/// The kernel table for this CPU, detected on first use and then fixed.
pub(crate) fn get() -> &'static Kernels {
    static CHOSEN: OnceLock<Kernels> = OnceLock::new();
    CHOSEN.get_or_init(Kernels::detect)
}

/// Name of the chosen f32 kernel set ("avx2+fma", "neon", "scalar").
pub fn kernel_name() -> &'static str {
    get().name
}
