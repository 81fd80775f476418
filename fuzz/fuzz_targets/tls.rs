//! Arbitrary ciphertext in arbitrary chunks into a TLS connection (see `iomodels_fuzz::tls`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iomodels_fuzz::tls(data));
