//! Data-parallel loops for our CPU kernels on Candle's own worker pool.
//!
//! Candle runs element-wise ops on a spin-waiting barrier pool; a kernel that used rayon's
//! global pool instead would compete with those spinning workers for the cores (with 2
//! threads on 2 cores the custom max-pool lost its whole advantage that way). Running on
//! `candle_core::utils::barrier_pool()` keeps one set of worker threads busy.

use std::sync::Mutex;

/// Calls `f(i, chunk_i)` for every `chunk_len`-long chunk of `out` (the last may be shorter),
/// in parallel on Candle's barrier pool. Each chunk is visited exactly once, so results do
/// not depend on the number of threads.
pub fn for_each_chunk_mut<T: Send>(
    out: &mut [T],
    chunk_len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if out.is_empty() || chunk_len == 0 {
        return;
    }
    // One uncontended lock per chunk hands out disjoint `&mut` slices safely.
    let chunks: Vec<Mutex<&mut [T]>> = out.chunks_mut(chunk_len).map(Mutex::new).collect();
    candle_core::utils::barrier_pool().execute_chunked(chunks.len(), |range| {
        for i in range {
            let mut chunk = chunks[i]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(i, &mut chunk);
        }
    });
}

/// `(0..n).map(f)` computed in parallel on Candle's barrier pool, in order.
pub fn map_indices<R: Send + Default + Clone>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let mut out = vec![R::default(); n];
    for_each_chunk_mut(&mut out, 1, |i, slot| slot[0] = f(i));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_every_chunk_once() {
        let mut v = vec![0u32; 103];
        for_each_chunk_mut(&mut v, 10, |i, c| {
            c.iter_mut().for_each(|x| *x += i as u32 + 1)
        });
        for (k, x) in v.iter().enumerate() {
            assert_eq!(*x, (k / 10) as u32 + 1);
        }
        assert_eq!(map_indices(5, |i| i * i), vec![0, 1, 4, 9, 16]);
    }
}
