//! End-to-end tests of the `insar-mm` binary, one module per command family, linked into one
//! test binary (`cargo test --release --test cli`; one module: `... --test cli data::`).

mod bench_heads;
mod bench_ssl;
mod caption;
mod caption_real;
mod data;
mod eval;
mod generate;
mod heads;
mod limits;
mod physics;
mod retrieval;
mod support;
mod synth;
mod train;
