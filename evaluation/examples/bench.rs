//! Library-level timing of the two benchmarked metrics (the CLI adds only printing):
//!
//!     cargo run --release -p insar-mm-eval --example bench -- captions REFS.json RESULTS.json
//!     cargo run --release -p insar-mm-eval --example bench -- fid REAL.npy FAKE.npy [KID_SUBSETS]
//!
//! Inputs: `evaluation/reference/bench.py` (which also times the Python references).

use std::path::Path;
use std::time::Instant;

use insar_mm_eval::captions::CaptionSet;
use insar_mm_eval::fid::{self, FidMode};
use insar_mm_eval::npy;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("captions") if args.len() == 3 => {
            let t = Instant::now();
            let set = CaptionSet::load(Path::new(&args[1]), Path::new(&args[2]))?;
            let s = set.evaluate(false)?;
            println!("{}", serde_json::to_string_pretty(&s.to_json())?);
            println!("seconds {:.3}", t.elapsed().as_secs_f64());
        }
        Some("fid") if args.len() >= 3 => {
            let t = Instant::now();
            let a = npy::read(Path::new(&args[1]))?;
            let b = npy::read(Path::new(&args[2]))?;
            let t_read = t.elapsed().as_secs_f64();
            let f = fid::fid(&a, &b, FidMode::Exact)?;
            let t_fid = t.elapsed().as_secs_f64();
            println!(
                "fid {:.10} ({}), read {t_read:.2} s, read+fid {t_fid:.2} s",
                f.fid, f.method
            );
            if let Some(subsets) = args.get(3) {
                let t = Instant::now();
                let k = fid::kid(&a, &b, subsets.parse()?, 1000, 0)?;
                println!(
                    "kid_mean {:.8} kid_std {:.8} kid_full {:.8}: {:.2} s",
                    k.mean,
                    k.std,
                    k.full,
                    t.elapsed().as_secs_f64()
                );
            }
        }
        _ => {
            return Err(
                "usage: bench captions REFS RESULTS | bench fid REAL FAKE [KID_SUBSETS]".into(),
            )
        }
    }
    Ok(())
}
