#![no_main]
// insar_mm::fuzz::png under libFuzzer; see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| insar_mm::fuzz::png(data));
