#![no_main]
// insar_mm::fuzz::run_files under libFuzzer; see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| insar_mm::fuzz::run_files(data));
