//! Word interning and n-gram keys shared by the BLEU and CIDEr scorers: a sentence becomes
//! word ids, an n-gram (n ≤ 4) one `u128`, hashed with a fast multiplicative hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A fast hasher for integer keys (not DoS-resistant; keys come from local text).
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn finish(&self) -> u64 {
        let x = self.0 ^ (self.0 >> 32);
        x.wrapping_mul(0xd6e8_feb8_6659_fd93) ^ (x >> 29)
    }
}

/// A hash map with [`KeyHasher`].
pub type FastMap<K2, V> = HashMap<K2, V, BuildHasherDefault<KeyHasher>>;

/// Interns words into dense ids.
#[derive(Debug, Default)]
pub struct Vocab<'a> {
    ids: HashMap<&'a str, u32>,
}

impl<'a> Vocab<'a> {
    /// The ids of the whitespace-separated words of `s` (Python `str.split()`).
    pub fn words(&mut self, s: &'a str) -> Vec<u32> {
        s.split_whitespace()
            .map(|w| {
                let next = self.ids.len() as u32;
                *self.ids.entry(w).or_insert(next)
            })
            .collect()
    }
}

/// The key of an n-gram (1 ≤ n ≤ 4); grams of different orders live in different maps.
#[inline]
pub fn key(gram: &[u32]) -> u128 {
    gram.iter()
        .fold(0u128, |k, &w| (k << 32) | u128::from(w + 1))
}

/// Counts of the 1- to 4-grams of a sentence, one map per order.
pub fn counts(words: &[u32]) -> [FastMap<u128, f64>; 4] {
    let mut out: [FastMap<u128, f64>; 4] = Default::default();
    for (n, map) in out.iter_mut().enumerate() {
        if words.len() <= n {
            break;
        }
        for g in words.windows(n + 1) {
            *map.entry(key(g)).or_insert(0.0) += 1.0;
        }
    }
    out
}
