//! The decode megakernel's timeline (`gpu bench-qwen --launches ...+mega:timeline`): in
//! that launch thread 0 of every block stamps [`EVENTS`] events per layer
//! (`qwen_mega.cu` `mega_mark`), each as the pair (`%globaltimer` ns, `clock64` cycles).
//! [`summarize`] turns the stamps of one launch into each phase's time two ways:
//!
//! - **on the critical path**: for phase `e` of layer `l`, the latest block's stamp `e`
//!   minus the latest block's stamp `e - 1` (the global timer is one clock for all SMs), so
//!   the phases of a layer add up to its time from the first stamp to the last;
//! - **per block**: each block's own cycles between the two stamps, at the block's own
//!   cycles per nanosecond over the whole launch (`%globaltimer` may tick coarsely; the
//!   cycle counter does not, but the SMs' counters are not one clock).
//!
//! Invariant: a block's stamps never go back in time, in layer and event order; stamps that
//! break it (or a buffer of zeros: a launch without the timeline) are an error, not a table.

use crate::error::{ExecError, Result};

/// Stamps per layer and block (`MEGA_EVENTS` in qwen_mega.cu).
pub const EVENTS: usize = 25;

/// What ends at each stamp: `PHASES[e]` is the time from stamp `e - 1` to stamp `e` of a
/// layer; `PHASES[0]`, from the previous layer's last stamp to this layer's first, is the
/// barrier after down_proj (none before the first layer). The numbers are the ones
/// `qwen_decode_layers` passes to `mega_mark` (attention_body's own parts: 8-11, thread 0's
/// items; a block without items stamps them as the pass starts). For pure decode RoPE runs
/// inside the attention items and stamps 5 and 6 are one; stamp 7 ends the first of two
/// attention passes in the `timeline-twice` probe and is stamp 6 again otherwise.
pub const PHASES: [&str; EVENTS] = [
    "barrier after down_proj",
    "qkv: x staged, input norm",
    "qkv: o_proj copies issued, wait for weights",
    "qkv: tiles",
    "barrier after qkv",
    "q/k norm, RoPE, KV write (unfused)",
    "barrier after RoPE (unfused)",
    "attention: first of two passes (twice probe)",
    "attention: request lookup, q loads",
    "attention: RoPE, KV write (or q staged)",
    "attention: tiles",
    "attention: merge, store",
    "attention: the block's other items",
    "barrier after attention",
    "o_proj: x staged",
    "o_proj: gate_up copies issued, wait for weights",
    "o_proj: tiles",
    "barrier after o_proj",
    "gate_up: x staged, post norm",
    "gate_up: down_proj copies issued, wait for weights",
    "gate_up: tiles",
    "barrier after gate_up",
    "down_proj: x staged",
    "down_proj: next qkv copies issued, wait for weights",
    "down_proj: tiles",
];

/// What stamps 8-11 end in the `timeline-tiles` probe (`MEGA_TILES`: the compact tiles
/// stamp inside): [`PHASES`] 8-11 read as these.
pub const TILE_PHASES: [&str; 4] = [
    "attention: request lookup, q loads, RoPE, KV write",
    "attention tiles: block table, first K rows staged",
    "attention tiles: dots, softmax, first V rows staged",
    "attention: V sums, other tiles, merge, store",
];

/// `phase` as the `timeline-tiles` probe's stamps mean it (`tiles`), else unchanged.
pub fn label(phase: &'static str, tiles: bool) -> &'static str {
    match PHASES[8..12].iter().position(|&p| p == phase) {
        Some(i) if tiles => TILE_PHASES[i],
        _ => phase,
    }
}

/// One phase's mean time.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PhaseTime {
    pub phase: &'static str,
    /// Mean over layers of the latest block's stamp minus the latest block's previous stamp.
    pub critical_us: f64,
    /// Mean over blocks and layers of the block's own time in the phase.
    pub block_us: f64,
    /// The critical-path time in the first layer that has the phase (layer 0; layer 1 for
    /// the barrier after down_proj): next to `critical_us`, whether a phase is slower the
    /// first time its code and data are touched than in the layers after.
    pub first_us: f64,
}

/// A launch's phases, in forward order (the barrier after down_proj last).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Timeline {
    pub blocks: usize,
    pub layers: usize,
    pub phases: Vec<PhaseTime>,
    /// The first stamp of any block to the last of any block.
    pub span_us: f64,
    /// The smallest step between two different `%globaltimer` readings of one block.
    pub timer_step_ns: u64,
    /// Mean over blocks of the cycle counter's rate.
    pub cycles_per_ns: f64,
}

/// The stamps of `blocks` blocks and `layers` layers as the kernel writes them:
/// `raw[((block * layers + layer) * EVENTS + event) * 2]` ns, `+ 1` cycles.
pub fn summarize(raw: &[u64], blocks: usize, layers: usize) -> Result<Timeline> {
    let bad = |m: String| ExecError::InvalidInput(format!("megakernel timeline: {m}"));
    if blocks == 0 || layers == 0 || raw.len() != blocks * layers * EVENTS * 2 {
        return Err(bad(format!(
            "{} stamps for {blocks} blocks and {layers} layers (want {})",
            raw.len(),
            blocks * layers * EVENTS * 2
        )));
    }
    let at = |b: usize, l: usize, e: usize| {
        (raw[((b * layers + l) * EVENTS + e) * 2], raw[((b * layers + l) * EVENTS + e) * 2 + 1])
    };
    let n = layers * EVENTS;
    let mut rate = vec![0.0f64; blocks];
    let mut timer_step = u64::MAX;
    for (b, r) in rate.iter_mut().enumerate() {
        let mut prev: Option<(u64, u64)> = None;
        for i in 0..n {
            let s = at(b, i / EVENTS, i % EVENTS);
            if s.0 == 0 {
                return Err(bad(format!("block {b} layer {} event {} never stamped", i / EVENTS, i % EVENTS)));
            }
            if let Some(p) = prev {
                if s.0 < p.0 || s.1 < p.1 {
                    return Err(bad(format!("block {b}: stamp {i} is earlier than stamp {}", i - 1)));
                }
                if s.0 > p.0 {
                    timer_step = timer_step.min(s.0 - p.0);
                }
            }
            prev = Some(s);
        }
        let (first, last) = (at(b, 0, 0), at(b, layers - 1, EVENTS - 1));
        if last.0 == first.0 {
            return Err(bad(format!("block {b}: the timer did not move during the launch")));
        }
        *r = (last.1 - first.1) as f64 / (last.0 - first.0) as f64;
        if *r <= 0.0 {
            return Err(bad(format!("block {b}: the cycle counter did not move during the launch")));
        }
    }
    let latest = |l: usize, e: usize| (0..blocks).map(|b| at(b, l, e).0).max().unwrap_or(0);
    let mut phases = Vec::with_capacity(EVENTS);
    // Forward order: stamps 1..EVENTS-1, then the barrier after down_proj (stamp 0 of
    // layers 1.. from the previous layer's last).
    for e in (1..EVENTS).chain([0]) {
        let spans: Vec<(usize, usize, usize)> = if e == 0 {
            (1..layers).map(|l| (l - 1, EVENTS - 1, l)).collect()
        } else {
            (0..layers).map(|l| (l, e - 1, l)).collect()
        };
        if spans.is_empty() {
            continue;
        }
        let mut critical = 0.0;
        let mut block = 0.0;
        let (lp0, ep0, l0) = spans[0];
        let first = (latest(l0, e) - latest(lp0, ep0)) as f64;
        for &(lp, ep, l) in &spans {
            critical += (latest(l, e) - latest(lp, ep)) as f64;
            for (b, r) in rate.iter().enumerate() {
                block += (at(b, l, e).1 - at(b, lp, ep).1) as f64 / r;
            }
        }
        let k = spans.len() as f64;
        phases.push(PhaseTime {
            phase: PHASES[e],
            critical_us: critical / k / 1e3,
            block_us: block / (k * blocks as f64) / 1e3,
            first_us: first / 1e3,
        });
    }
    let first = (0..blocks).map(|b| at(b, 0, 0).0).min().unwrap_or(0);
    let span_us = (latest(layers - 1, EVENTS - 1) - first) as f64 / 1e3;
    let cycles_per_ns = rate.iter().sum::<f64>() / blocks as f64;
    Ok(Timeline { blocks, layers, phases, span_us, timer_step_ns: timer_step, cycles_per_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stamps of blocks that each spend `dur(b, e)` ns before stamp `e` (stamp 0 of layer 0
    /// at `start(b)`), at 2 cycles per ns.
    fn stamps(
        blocks: usize,
        layers: usize,
        start: impl Fn(usize) -> u64,
        dur: impl Fn(usize, usize) -> u64,
    ) -> Vec<u64> {
        let mut raw = vec![0u64; blocks * layers * EVENTS * 2];
        for b in 0..blocks {
            let mut t = start(b);
            for l in 0..layers {
                for e in 0..EVENTS {
                    if l > 0 || e > 0 {
                        t += dur(b, e);
                    }
                    let i = ((b * layers + l) * EVENTS + e) * 2;
                    raw[i] = t;
                    raw[i + 1] = 2 * t + 7;
                }
            }
        }
        raw
    }

    #[test]
    fn phases_on_the_critical_path_and_per_block() {
        // Block 1 spends 300 ns more than block 0 on attention's tiles (stamp 10);
        // everything else takes 100 ns.
        let raw = stamps(2, 3, |_| 1_000, |b, e| if e == 10 && b == 1 { 400 } else { 100 });
        let t = summarize(&raw, 2, 3).unwrap();
        assert_eq!(t.phases.len(), EVENTS);
        assert_eq!(t.phases[0].phase, PHASES[1]);
        assert_eq!(t.phases.last().unwrap().phase, PHASES[0]);
        let att = t.phases.iter().find(|p| p.phase == "attention: tiles").unwrap();
        // Block 1 is the latest at every stamp 9 (it never runs ahead), so each layer's
        // tiles put its own 400 ns on the critical path; per block the mean is 250.
        assert!((att.critical_us - 0.4).abs() < 1e-9, "{att:?}");
        assert!((att.block_us - 0.25).abs() < 1e-9, "mean of 100 and 400 ns: {att:?}");
        let qkv = &t.phases[0];
        assert!((qkv.critical_us - 0.1).abs() < 1e-9 && (qkv.block_us - 0.1).abs() < 1e-9, "{qkv:?}");
        assert!((t.cycles_per_ns - 2.0).abs() < 1e-9);
        assert_eq!(t.timer_step_ns, 100);
        // A layer's phases add up to its critical time; all layers make the span.
        let per_layer: f64 = t.phases.iter().map(|p| p.critical_us).sum();
        assert!((per_layer * 3.0 - t.phases.last().unwrap().critical_us - t.span_us).abs() < 1e-9);
    }

    #[test]
    fn the_tiles_probe_relabels_attention_only() {
        for (i, &p) in PHASES.iter().enumerate() {
            assert_eq!(label(p, false), p);
            let want = if (8..12).contains(&i) { TILE_PHASES[i - 8] } else { p };
            assert_eq!(label(p, true), want);
        }
    }

    #[test]
    fn the_first_layer_is_reported_apart() {
        // Layer 0's tiles (stamp 10) take 1 us, later layers' 100 ns; the barrier after
        // down_proj (stamp 0) exists from layer 1 on.
        let layers = 3;
        let mut raw = vec![0u64; layers * EVENTS * 2];
        let mut t = 1_000;
        for l in 0..layers {
            for e in 0..EVENTS {
                if l > 0 || e > 0 {
                    t += if l == 0 && e == 10 { 1_000 } else { 100 };
                }
                raw[(l * EVENTS + e) * 2] = t;
                raw[(l * EVENTS + e) * 2 + 1] = t;
            }
        }
        let s = summarize(&raw, 1, layers).unwrap();
        let tiles = s.phases.iter().find(|p| p.phase == "attention: tiles").unwrap();
        assert!((tiles.first_us - 1.0).abs() < 1e-9, "{tiles:?}");
        assert!((tiles.critical_us - 0.4).abs() < 1e-9, "mean of 1,000, 100 and 100 ns: {tiles:?}");
        let other = &s.phases[0];
        assert!((other.first_us - 0.1).abs() < 1e-9 && (other.critical_us - 0.1).abs() < 1e-9, "{other:?}");
        let bar = s.phases.last().unwrap();
        assert!((bar.first_us - 0.1).abs() < 1e-9, "{bar:?}");
    }

    #[test]
    fn a_late_block_shows_on_the_critical_path_only_where_it_is_late() {
        // Block 1 starts 1 us late and keeps the same pace: every critical phase is still
        // 100 ns (the latest block's stamps move together), but the span grows by 1 us.
        let raw = stamps(2, 2, |b| 1_000 + 1_000 * b as u64, |_, _| 100);
        let t = summarize(&raw, 2, 2).unwrap();
        assert!(t.phases.iter().all(|p| (p.critical_us - 0.1).abs() < 1e-9), "{:?}", t.phases);
        assert!((t.span_us - (1.0 + 0.1 * (2 * EVENTS - 1) as f64)).abs() < 1e-9, "{}", t.span_us);
    }

    #[test]
    fn missing_or_disordered_stamps_are_errors() {
        let raw = stamps(2, 2, |_| 1_000, |_, _| 100);
        assert!(summarize(&raw[1..], 2, 2).is_err(), "wrong length");
        assert!(summarize(&vec![0; raw.len()], 2, 2).unwrap_err().to_string().contains("never stamped"));
        let mut back = raw.clone();
        back[(EVENTS + 3) * 2] = 1_050; // block 0, layer 1, stamp 3: before stamp 2
        assert!(summarize(&back, 2, 2).unwrap_err().to_string().contains("earlier"));
        assert!(summarize(&raw, 0, 2).is_err());
    }
}
