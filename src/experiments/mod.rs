//! Experiments from papers, reproduced with the suite's own training code: each runs its
//! protocol end to end and renders its table (`insar-mm bench ...`).

pub mod bench_heads;
pub mod ssl_bench;
