#![no_main]
// insar_mm::fuzz::annotation_archive under libFuzzer; see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| insar_mm::fuzz::annotation_archive(data));
