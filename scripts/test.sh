#!/usr/bin/env bash
# The test command: installs the Debian packages the tests use as real peers (socat, openssl,
# iperf), for network namespaces (iproute2) and to render the man page (groff-base), when missing, runs every test of the workspace on Linux, then the Windows tests under Wine
# (scripts/test-windows.sh, which installs its own toolchain and Wine). Extra arguments go to
# the Linux `cargo test`. IOMODELS_SKIP_WINDOWS=1 runs the Linux half only.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v iperf >/dev/null 2>&1 || missing+=(iperf)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# tests/cli.rs renders `iomodels manpage` with groff, as `man -l -` does.
command -v groff >/dev/null 2>&1 || missing+=(groff-base)
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Run every test; then one closing line that sums all the test binaries' results (cargo's own
# last line is the last crate's doc-tests, often "0 passed").
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# A hung test must fail the run, not stall CI: the whole `cargo test` (build included) gets
# IOMODELS_TEST_TIMEOUT seconds (default 1200; it takes ~4 min cold).
limit=${IOMODELS_TEST_TIMEOUT:-1200}
timeout -k 30 "$limit" cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" = 124 ]; then
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (cargo test hung: stopped after $limit s)" | tee -a "$log"
fi
if [ "${IOMODELS_SKIP_WINDOWS:-0}" != 1 ]; then
  echo "== the Windows backends under Wine (scripts/test-windows.sh)"
  scripts/test-windows.sh 2>&1 | tee -a "$log"
  wstatus=${PIPESTATUS[0]}
  [ "$wstatus" = 0 ] || status=$wstatus
fi
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     /^windows skipped: / { s += $3 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
