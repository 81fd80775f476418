#!/usr/bin/env bash
# Fuzzes the sans-I/O core for a bounded time: scripts/fuzz.sh TARGET SECONDS
#   TARGET: chunked (echo and discard over arbitrary chunkings) or tls (arbitrary ciphertext)
# Installs cargo-fuzz if missing. Stable Rust is enough: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass
# its -Z flags. AddressSanitizer is on unless FUZZ_SANITIZER says otherwise (none, address...).
# The corpus grows in fuzz/corpus/TARGET/ and a crash lands in fuzz/artifacts/TARGET/ (both
# ignored by git): minimize it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin TARGET fuzz/artifacts/TARGET/crash-...
# and copy the result to fuzz/regressions/TARGET/, which `cargo test -p iomodels-core` replays.
# Not part of CI. Runs at nice 10, on FUZZ_JOBS processes (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?usage: scripts/fuzz.sh chunked|tls SECONDS}
seconds=${2:?usage: scripts/fuzz.sh chunked|tls SECONDS}
sanitizer=${FUZZ_SANITIZER:-address}
jobs=${FUZZ_JOBS:-1}

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

mkdir -p "fuzz/corpus/$target"
export RUSTC_BOOTSTRAP=1
extra=()
if [ "$jobs" -gt 1 ]; then
  extra=(-jobs="$jobs" -workers="$jobs")
fi
exec nice -n 10 cargo fuzz run --sanitizer "$sanitizer" "$target" "fuzz/corpus/$target" -- \
  -max_total_time="$seconds" -print_final_stats=1 "${extra[@]}"
