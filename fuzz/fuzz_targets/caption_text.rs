#![no_main]
// insar_mm::fuzz::caption_text under libFuzzer; see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| insar_mm::fuzz::caption_text(data));
