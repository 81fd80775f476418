#!/usr/bin/env bash
# The Windows half of the tests: builds the workspace for x86_64-pc-windows-gnu and runs the
# Windows tests (the conformance suite for every Winsock model, the Windows edge cases, the
# core's unit tests) under Wine, headless. Installs what it needs when missing: Debian's Rust
# "web" toolchain with its std sources (this machine's rustup cannot download targets), mingw
# and Wine. See ../shared/notes/windows-under-wine.md for why each piece is there.
#
# Usage: scripts/test-windows.sh [extra cargo test arguments, e.g. a test-name filter]
# Env: IOMODELS_WINE_PREFIX (default target/wine-prefix) keeps the Wine prefix between runs;
# IOMODELS_WINDOWS_TARGET_DIR (default target/windows) is the cargo target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)

# 1. Packages.
missing=()
for p in rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64 wine wine64; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test-windows.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The toolchain: Debian's rustc 1.96 with its own std sources, built for the target
# (-Zbuild-std), linked by mingw, run by Wine. A target directory of its own, so the Linux
# build (rustup's toolchain) and this one never invalidate each other.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${IOMODELS_WINDOWS_TARGET_DIR:-$root/target/windows}"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
cargo=/usr/bin/cargo
target=(-Zbuild-std=std,panic_abort --target x86_64-pc-windows-gnu)

# 3. Wine: a private prefix, no display, no debug chatter; the ProcessPrng shim in it.
export WINEPREFIX="${IOMODELS_WINE_PREFIX:-$root/target/wine-prefix}"
export WINEDEBUG=-all WINEARCH=win64
unset DISPLAY WAYLAND_DISPLAY
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  echo "scripts/test-windows.sh: creating the Wine prefix $WINEPREFIX" >&2
  mkdir -p "$WINEPREFIX"
  wine wineboot --init >/dev/null 2>&1
  wineserver -w
fi
shim="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
if [ ! -f "$shim" ] || [ scripts/windows/bcryptprimitives.c -nt "$shim" ]; then
  x86_64-w64-mingw32-gcc -shared -O2 -o "$shim" scripts/windows/bcryptprimitives.c
fi
# One wineserver for the whole run (each `wine` start costs seconds without one).
wineserver -p
trap 'wineserver -k 2>/dev/null || true' EXIT

# 4. Build everything, then run the tests.
echo "== windows: cargo build (workspace, x86_64-pc-windows-gnu)"
$cargo build --workspace --lib --bins --tests "${target[@]}"
echo "== windows: iomodels models (under Wine)"
models_out=$(wine "$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/debug/iomodels.exe" models)
echo "$models_out"
echo "== windows: cargo test (under Wine)"
log=$(mktemp)
set +e
$cargo test "${target[@]}" -p iomodels-core -p iomodels-server -p iomodels-load --lib --tests "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# The binary must list every model with its Winsock mechanism.
for m in blocking select async-select event-select overlapped-event overlapped-routine completion-port; do
  if ! grep -q "^$m .*yes" <<<"$models_out"; then
    echo "windows: 'iomodels models' does not list $m as available" >&2
    status=1
  fi
done
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "windows tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
rm -f "$log"
echo "windows: took $(( $(date +%s) - started )) s"
exit "$status"
