#!/usr/bin/env bash
# Builds the Windows `iomodels.exe` (x86_64-pc-windows-gnu, release) on Linux and prints its
# path on the last line of stdout. Installs what it needs when missing: Debian's Rust "web"
# toolchain with its std sources (std is built for the target with -Zbuild-std) and mingw, the
# same toolchain scripts/test-windows.sh uses (without Wine: nothing is run here).
# The .exe needs only Windows' own DLLs (kernel32, ws2_32, ...): copy it to any 64-bit
# Windows 10 or later and run it there (`iomodels.exe models`, `iomodels.exe serve`, ...).
#
# Usage: scripts/build-windows.sh [extra cargo build arguments]
# Env: IOMODELS_WINDOWS_TARGET_DIR (default target/windows) is the cargo target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

missing=()
for p in rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/build-windows.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${IOMODELS_WINDOWS_TARGET_DIR:-$root/target/windows}"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
/usr/bin/cargo build --release --bin iomodels -Zbuild-std=std,panic_abort \
  --target x86_64-pc-windows-gnu "$@" >&2
exe="$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/release/iomodels.exe"
[ -f "$exe" ] || { echo "scripts/build-windows.sh: no $exe after the build" >&2; exit 1; }
echo "$exe"
