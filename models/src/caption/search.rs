//! Batched greedy decoding and beam search.
//!
//! Both decode incrementally ([`CaptionDecoder::next_token_log_probs_cached`]): each step runs
//! the decoder on the newest token only, attending to the cached self-attention inputs of the
//! earlier positions, so a caption of `T` tokens costs `T` positions instead of the `T²/2` of
//! re-running the whole prefix (tested equal to the full recomputation). Finished sequences
//! leave the batch; beam hypotheses take their parent's cache rows.
//!
//! Scores: `log_prob` is the sum of the token log-probabilities, `[EOS]` included; `score`
//! is `log_prob / len^α` with `len` the number of generated tokens (`[EOS]` included) and
//! `α` the length penalty (0: raw log-probability, favouring short captions; 1: mean per
//! token). `[PAD]` and `[BOS]` are never generated. Ties go to the lower token id, then the earlier hypothesis, so beam width 1 is
//! exactly greedy decoding.
//!
//! Beam search (per image, batched across images): each step expands every live hypothesis
//! by every token and walks the candidates best first; a candidate ending in `[EOS]` among
//! the first `beam_width` is finished, the others continue until `beam_width` live
//! hypotheses are chosen. An image is done once it has `beam_width` finished hypotheses
//! (Hugging Face's `early_stopping=True`); at the length limit the live ones are returned
//! unfinished. The result is sorted by `score`, best first.

use candle_core::{DType, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::decoder::{CaptionDecoder, DecoderCache};

/// Decoding options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// 1 = greedy.
    pub beam_width: usize,
    /// Most generated tokens, `[EOS]` included (also bounded by the decoder's `max_len − 1`).
    pub max_new_tokens: usize,
    /// Exponent α of the length normalisation `log_prob / len^α`.
    pub length_penalty: f64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            beam_width: 3,
            max_new_tokens: 95,
            length_penalty: 1.0,
        }
    }
}

/// A decoded caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated token ids, without `[BOS]` and `[EOS]`.
    pub tokens: Vec<u32>,
    /// Sum of the log-probabilities of the generated tokens (`[EOS]` included when finished).
    pub log_prob: f64,
    /// Length-normalised score used for ranking.
    pub score: f64,
    /// Whether the caption ended with `[EOS]` (false: cut at the length limit).
    pub finished: bool,
}

impl Hypothesis {
    fn new(tokens: Vec<u32>, log_prob: f64, finished: bool, alpha: f64) -> Self {
        let len = (tokens.len() + usize::from(finished)).max(1);
        Self {
            score: log_prob / (len as f64).powf(alpha),
            tokens,
            log_prob,
            finished,
        }
    }
}

fn validate(decoder: &CaptionDecoder, memory: &Tensor, cfg: &SearchConfig) -> Result<usize> {
    if cfg.beam_width == 0 {
        candle_core::bail!("beam width must be at least 1")
    }
    if !cfg.length_penalty.is_finite() {
        candle_core::bail!("length penalty must be finite, got {}", cfg.length_penalty)
    }
    let (_, _, d) = memory.dims3()?;
    if d != decoder.config().d_model {
        candle_core::bail!(
            "memory width {d} does not match the decoder's d_model {}",
            decoder.config().d_model
        )
    }
    Ok(cfg.max_new_tokens.min(decoder.config().max_len - 1))
}

/// Log-probabilities of the token after `last` `(N,)` for each row of `memory` `(N, M, d)`,
/// the earlier positions being in `cache` (which the new position is appended to).
fn step(
    decoder: &CaptionDecoder,
    memory: &Tensor,
    last: &[u32],
    cache: &mut DecoderCache,
) -> Result<Vec<Vec<f32>>> {
    let tokens = Tensor::from_vec(last.to_vec(), last.len(), memory.device())?;
    let mut rows: Vec<Vec<f32>> = decoder
        .next_token_log_probs_cached(memory, &tokens, cache)?
        .to_dtype(DType::F32)?
        .to_vec2()?;
    // A caption never contains [PAD] or a second [BOS].
    let pad = decoder.config().pad_id as usize;
    let bos = decoder.config().bos_id as usize;
    for row in &mut rows {
        row[pad] = f32::NEG_INFINITY;
        row[bos] = f32::NEG_INFINITY;
    }
    Ok(rows)
}

/// `memory` and `cache` restricted to `rows` (u32 indices into the current rows).
fn select(memory: &Tensor, cache: &mut DecoderCache, rows: &[u32]) -> Result<Tensor> {
    let idx = Tensor::from_vec(rows.to_vec(), rows.len(), memory.device())?;
    cache.select(&idx)?;
    memory.index_select(&idx, 0)
}

/// Index and value of the largest entry, the lowest index among ties.
fn argmax(row: &[f32]) -> (u32, f32) {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            best = (i as u32, v);
        }
    }
    best
}

/// Greedy decoding of every memory row `(B, M, d)`: one hypothesis per image.
pub fn greedy(
    decoder: &CaptionDecoder,
    memory: &Tensor,
    cfg: &SearchConfig,
) -> Result<Vec<Hypothesis>> {
    let limit = validate(decoder, memory, cfg)?;
    let eos = decoder.config().eos_id;
    let b = memory.dim(0)?;
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut log_prob = vec![0f64; b];
    let mut finished = vec![false; b];
    // The images still decoding, their memory rows, newest tokens and cache.
    let mut active: Vec<usize> = (0..b).collect();
    let mut mem = memory.clone();
    let mut last = vec![decoder.config().bos_id; b];
    let mut cache = decoder.new_cache();
    for _ in 0..limit {
        if active.is_empty() {
            break;
        }
        let lp = step(decoder, &mem, &last, &mut cache)?;
        let mut keep: Vec<u32> = Vec::with_capacity(active.len());
        last.clear();
        for (r, (&i, row)) in active.iter().zip(&lp).enumerate() {
            let (tok, l) = argmax(row);
            log_prob[i] += f64::from(l);
            if tok == eos {
                finished[i] = true;
            } else {
                tokens[i].push(tok);
                keep.push(r as u32);
                last.push(tok);
            }
        }
        if keep.len() < active.len() {
            active = keep.iter().map(|&r| active[r as usize]).collect();
            if !keep.is_empty() {
                mem = select(&mem, &mut cache, &keep)?;
            }
        }
    }
    Ok(tokens
        .into_iter()
        .zip(log_prob)
        .zip(finished)
        .map(|((t, l), f)| Hypothesis::new(t, l, f, cfg.length_penalty))
        .collect())
}

struct Beams {
    live: Vec<(Vec<u32>, f64)>,
    finished: Vec<Hypothesis>,
    done: bool,
}

/// Beam search for every memory row `(B, M, d)`: up to `beam_width` hypotheses per image,
/// best first.
pub fn beam_search(
    decoder: &CaptionDecoder,
    memory: &Tensor,
    cfg: &SearchConfig,
) -> Result<Vec<Vec<Hypothesis>>> {
    let limit = validate(decoder, memory, cfg)?;
    let k = cfg.beam_width;
    let alpha = cfg.length_penalty;
    let eos = decoder.config().eos_id;
    let b = memory.dim(0)?;
    let mut beams: Vec<Beams> = (0..b)
        .map(|_| Beams {
            live: vec![(Vec::new(), 0.0)],
            finished: Vec::new(),
            done: false,
        })
        .collect();
    // The rows of a step: the live hypotheses of the unfinished images, in image order; their
    // memory rows, newest tokens and cache.
    let mut mem = memory.clone();
    let mut last = vec![decoder.config().bos_id; b];
    let mut cache = decoder.new_cache();
    for _ in 0..limit {
        if last.is_empty() {
            break;
        }
        let lp = step(decoder, &mem, &last, &mut cache)?;
        // Row (in this step's layout) of every hypothesis of the next step.
        let mut parents: Vec<u32> = Vec::new();
        let mut offset = 0;
        for beam in beams.iter_mut().filter(|b| !b.done) {
            let n_live = beam.live.len();
            let mut cands: Vec<(f64, usize, u32)> = Vec::new();
            for (h, (_, base)) in beam.live.iter().enumerate() {
                for (v, &l) in lp[offset + h].iter().enumerate() {
                    cands.push((base + f64::from(l), h, v as u32));
                }
            }
            cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let mut next = Vec::with_capacity(k);
            for (rank, &(total, h, tok)) in cands.iter().take(2 * k).enumerate() {
                if tok == eos {
                    if rank < k {
                        let tokens = beam.live[h].0.clone();
                        beam.finished
                            .push(Hypothesis::new(tokens, total, true, alpha));
                    }
                } else {
                    let mut tokens = beam.live[h].0.clone();
                    tokens.push(tok);
                    next.push((tokens, total, (offset + h) as u32));
                }
                if next.len() == k {
                    break;
                }
            }
            offset += n_live;
            beam.done = beam.finished.len() >= k || next.is_empty();
            if !beam.done {
                parents.extend(next.iter().map(|n| n.2));
            }
            beam.live = next.into_iter().map(|(t, l, _)| (t, l)).collect();
        }
        last = beams
            .iter()
            .filter(|b| !b.done)
            .flat_map(|b| {
                b.live
                    .iter()
                    .map(|(t, _)| *t.last().expect("a live hypothesis has a token"))
            })
            .collect();
        if !parents.is_empty() {
            mem = select(&mem, &mut cache, &parents)?;
        }
    }
    Ok(beams
        .into_iter()
        .map(|mut beam| {
            if !beam.done {
                for (tokens, l) in beam.live.drain(..) {
                    beam.finished.push(Hypothesis::new(tokens, l, false, alpha));
                }
            }
            beam.finished.sort_by(|a, b| b.score.total_cmp(&a.score));
            beam.finished.truncate(k);
            beam.finished
        })
        .collect())
}
