//! The KV cache: K and V rows of every layer and position in f32 or f16,
//! allocated once for the context, and the packed copies of its first
//! rows that snapshots and states hold.

use crate::error::{Error, Result};
use half::f16;

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    F32,
    F16,
}

impl KvType {
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum KvData {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Default for KvData {
    fn default() -> Self {
        KvData::F32(Vec::new())
    }
}

/// K and V for every layer and position, laid out `[layer][pos][kv_dim]`,
/// allocated once for `n_ctx` positions. The default is an empty cache of
/// no positions (what a cache moved out with `std::mem::take` leaves).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub n_ctx: usize,
    pub n_layer: usize,
    pub kv_dim: usize,
    pub(crate) k: KvData,
    pub(crate) v: KvData,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, kv_dim: usize, kind: KvType) -> Result<KvCache> {
        let n = n_layer
            .checked_mul(n_ctx)
            .and_then(|x| x.checked_mul(kv_dim))
            .filter(|&n| n <= (16usize << 30) / 4)
            .ok_or_else(|| {
                Error::usage(format!(
                    "a KV cache of {n_layer} layers × {n_ctx} positions × {kv_dim} is too large"
                ))
            })?;
        let make = || match kind {
            KvType::F32 => KvData::F32(vec![0.0; n]),
            KvType::F16 => KvData::F16(vec![f16::ZERO; n]),
        };
        Ok(KvCache {
            n_ctx,
            n_layer,
            kv_dim,
            k: make(),
            v: make(),
        })
    }

    pub fn kind(&self) -> KvType {
        match self.k {
            KvData::F32(_) => KvType::F32,
            KvData::F16(_) => KvType::F16,
        }
    }

    pub(crate) fn at(&self, layer: usize, pos: usize) -> usize {
        (layer * self.n_ctx + pos) * self.kv_dim
    }

    /// Stores the K and V rows of `k.len() / kv_dim` tokens at positions
    /// `pos0..` of `layer`.
    pub(crate) fn store(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let kvd = self.kv_dim;
        for (i, (kr, vr)) in k.chunks_exact(kvd).zip(v.chunks_exact(kvd)).enumerate() {
            let at = self.at(layer, pos0 + i);
            KvCache::put(&mut self.k, at, kr);
            KvCache::put(&mut self.v, at, vr);
        }
    }

    fn put(data: &mut KvData, at: usize, row: &[f32]) {
        match data {
            KvData::F32(d) => d[at..at + row.len()].copy_from_slice(row),
            KvData::F16(d) => {
                for (o, &x) in d[at..at + row.len()].iter_mut().zip(row) {
                    *o = f16::from_f32(x);
                }
            }
        }
    }
}

/// K and V rows of the first positions of every layer, copied out of a
/// cache (`[layer][pos][kv_dim]`, positions packed).
#[derive(Debug, Clone, PartialEq)]
pub enum KvRows {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<f16>, v: Vec<f16> },
}

impl KvRows {
    pub fn kind(&self) -> KvType {
        match self {
            KvRows::F32 { .. } => KvType::F32,
            KvRows::F16 { .. } => KvType::F16,
        }
    }

    /// Values in K (and in V).
    pub fn len(&self) -> usize {
        match self {
            KvRows::F32 { k, .. } => k.len(),
            KvRows::F16 { k, .. } => k.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Positions `0..n` of every layer of one side of a cache, packed.
fn take_rows<T: Copy>(d: &[T], n_layer: usize, layer_len: usize, n: usize) -> Vec<T> {
    (0..n_layer)
        .flat_map(|l| &d[l * layer_len..l * layer_len + n])
        .copied()
        .collect()
}

/// The inverse of [`take_rows`]: `src` (`n` values per layer) over the
/// first `n` values of every layer.
fn put_rows<T: Copy>(d: &mut [T], src: &[T], n_layer: usize, layer_len: usize, n: usize) {
    for l in 0..n_layer {
        d[l * layer_len..l * layer_len + n].copy_from_slice(&src[l * n..(l + 1) * n]);
    }
}

impl KvCache {
    /// Copies positions `0..n` of every layer.
    pub fn export(&self, n: usize) -> Result<KvRows> {
        let (layers, layer_len) = (self.n_layer, self.n_ctx * self.kv_dim);
        let len = n.min(self.n_ctx) * self.kv_dim;
        match (&self.k, &self.v) {
            (KvData::F32(k), KvData::F32(v)) => Ok(KvRows::F32 {
                k: take_rows(k, layers, layer_len, len),
                v: take_rows(v, layers, layer_len, len),
            }),
            (KvData::F16(k), KvData::F16(v)) => Ok(KvRows::F16 {
                k: take_rows(k, layers, layer_len, len),
                v: take_rows(v, layers, layer_len, len),
            }),
            _ => Err(Error::usage("K and V of the cache differ in type")),
        }
    }

    /// Writes `rows` (of `n` positions per layer) over positions `0..n`.
    pub fn import(&mut self, rows: &KvRows, n: usize) -> Result<()> {
        let per_layer = n * self.kv_dim;
        if n > self.n_ctx || rows.len() != self.n_layer * per_layer || rows.kind() != self.kind() {
            return Err(Error::usage("KV rows do not fit this cache"));
        }
        let (layers, layer_len) = (self.n_layer, self.n_ctx * self.kv_dim);
        match (rows, &mut self.k, &mut self.v) {
            (KvRows::F32 { k, v }, KvData::F32(dk), KvData::F32(dv)) => {
                put_rows(dk, k, layers, layer_len, per_layer);
                put_rows(dv, v, layers, layer_len, per_layer);
            }
            (KvRows::F16 { k, v }, KvData::F16(dk), KvData::F16(dv)) => {
                put_rows(dk, k, layers, layer_len, per_layer);
                put_rows(dv, v, layers, layer_len, per_layer);
            }
            _ => return Err(Error::usage("KV rows do not fit this cache")),
        }
        Ok(())
    }
}
