//! Echo and discard over arbitrary chunkings of input and output (see `iomodels_fuzz::chunked`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iomodels_fuzz::chunked(data));
