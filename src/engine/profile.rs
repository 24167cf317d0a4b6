//! Where a forward pass's time goes, by op (`zt bench-gen --profile`).
//!
//! Off by default: a disabled [`Profiler`] costs one branch per op. When on,
//! each op's wall time is measured on the thread that drives the forward
//! pass, so a matmul split over the pool counts once, from its start to
//! its last task's end (waiting for the slowest task included).

use std::time::{Duration, Instant};

/// The ops a forward pass is timed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Token embedding rows (dequantized) and their scaling.
    Embed,
    /// RMS norms: before attention and feed-forward, and per-head Q/K norms
    /// and post-norms where the architecture has them.
    Norm,
    /// The Q, K and V projections (one grouped matmul).
    Qkv,
    /// RoPE, the KV store and attention over the cache.
    Attention,
    /// The attention output projection.
    AttnOutput,
    /// The feed-forward gate and up projections (one grouped matmul).
    FfnGateUp,
    /// The gated activation (SwiGLU or GELU-tanh times up).
    FfnAct,
    /// The feed-forward down projection.
    FfnDown,
    /// Residual additions and biases.
    Residual,
    /// Final norm, LM head and logit softcap.
    Output,
    /// Choosing the next token from the logits (sampler or grammar mask)
    /// and its logprob.
    Sample,
}

impl Op {
    /// Every op, in a forward pass's order.
    pub const ALL: [Op; 11] = [
        Op::Embed,
        Op::Norm,
        Op::Qkv,
        Op::Attention,
        Op::AttnOutput,
        Op::FfnGateUp,
        Op::FfnAct,
        Op::FfnDown,
        Op::Residual,
        Op::Output,
        Op::Sample,
    ];

    /// A short name (llama.cpp's tensor vocabulary where there is one).
    pub fn name(self) -> &'static str {
        match self {
            Op::Embed => "token_embd",
            Op::Norm => "norms",
            Op::Qkv => "attn_qkv",
            Op::Attention => "rope+kv+attention",
            Op::AttnOutput => "attn_output",
            Op::FfnGateUp => "ffn_gate+up",
            Op::FfnAct => "ffn activation",
            Op::FfnDown => "ffn_down",
            Op::Residual => "residual+bias",
            Op::Output => "output (norm+lm head)",
            Op::Sample => "sampling",
        }
    }
}

/// Time per op since profiling was switched on.
#[derive(Debug, Clone, Default)]
pub struct Profiler {
    on: bool,
    nanos: [u64; Op::ALL.len()],
    calls: [u64; Op::ALL.len()],
}

/// One op's share of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpTime {
    pub op: Op,
    /// Wall time spent in the op.
    pub time: Duration,
    /// How many times it ran (per layer, per forward pass).
    pub calls: u64,
}

impl Profiler {
    /// Switches profiling on or off; either way the totals start again.
    pub fn set(&mut self, on: bool) {
        *self = Profiler {
            on,
            ..Profiler::default()
        };
    }

    /// The start of a timed op, `None` when profiling is off.
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        self.on.then(Instant::now)
    }

    /// Adds the time since `t` (from [`Profiler::start`]) to `op`.
    #[inline]
    pub fn stop(&mut self, op: Op, t: Option<Instant>) {
        if let Some(t) = t {
            let i = op as usize;
            let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.nanos[i] = self.nanos[i].saturating_add(ns);
            self.calls[i] += 1;
        }
    }

    /// The totals so far, every op in [`Op::ALL`] order (zero where it did
    /// not run).
    pub fn totals(&self) -> Vec<OpTime> {
        Op::ALL
            .iter()
            .map(|&op| OpTime {
                op,
                time: Duration::from_nanos(self.nanos[op as usize]),
                calls: self.calls[op as usize],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_records_nothing_and_on_records_each_op() {
        let mut p = Profiler::default();
        let t = p.start();
        assert!(t.is_none());
        p.stop(Op::Qkv, t);
        assert!(p.totals().iter().all(|o| o.calls == 0));
        p.set(true);
        let t = p.start();
        std::thread::sleep(Duration::from_millis(2));
        p.stop(Op::Qkv, t);
        let t = p.start();
        p.stop(Op::Qkv, t);
        let qkv = p.totals()[Op::Qkv as usize];
        assert_eq!((qkv.op, qkv.calls), (Op::Qkv, 2));
        assert!(qkv.time >= Duration::from_millis(2));
        p.set(true);
        assert!(p.totals().iter().all(|o| o.calls == 0 && o.time.is_zero()));
    }
}
