//! The cargo-fuzz harness (`fuzz/src/lib.rs`), run here on fixed and random inputs: so that
//! `cargo test` builds and lints it with the workspace, each input in `fuzz/regressions/` (a
//! few made by hand per target, and every crash the fuzzer ever found; the folder's README
//! says which is which and how one is added) stays fixed, and the harness's checks run without
//! cargo-fuzz.
//! Fuzzing itself: `scripts/fuzz.sh chunked 300`, `scripts/fuzz.sh tls 300`.

#[path = "../../../fuzz/src/lib.rs"]
mod harness;

use proptest::prelude::*;
use std::path::Path;

/// Runs `target` on every file in `fuzz/regressions/<name>/` (a README.md is skipped). It is in
/// git with at least one input per target: a missing or empty one fails (a replay that runs
/// nothing would pass for ever).
fn replay(name: &str, target: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(name);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the regression inputs of the {name} target are missing",
            dir.display()
        )
    });
    let mut inputs: Vec<_> = entries
        .map(|entry| entry.expect("list the regression inputs").path())
        .filter(|path| path.file_name().is_some_and(|f| f != "README.md"))
        .collect();
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "{}: no regression input for the {name} target",
        dir.display()
    );
    for path in inputs {
        eprintln!("replaying {}", path.display());
        target(&std::fs::read(&path).unwrap());
    }
}

#[test]
fn chunked_regressions_replay() {
    replay("chunked", harness::chunked);
}

#[test]
fn tls_regressions_replay() {
    replay("tls", harness::tls);
}

#[test]
fn the_harness_runs_on_empty_and_tiny_inputs() {
    for input in [&[][..], &[0], &[1], &[0xff; 3], &[2, 2, 2, 2, 2, 2]] {
        harness::chunked(input);
        harness::tls(input);
    }
}

#[test]
fn a_real_handshake_then_garbage_fails_cleanly() {
    // limits: scale 2 (u8 2), high water 16-bit-ish; readiness; prefix mode 2 (handshake).
    harness::tls(&[
        2, 0x40, 0x00, 0x01, 0, 2, 8, 0, 0, 0, 0, 0, 0, 23, 3, 3, 0, 4, 1, 2, 3, 4,
    ]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn chunked_holds_on_random_inputs(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        harness::chunked(&data);
    }

    #[test]
    fn tls_holds_on_random_inputs(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        harness::tls(&data);
    }
}
