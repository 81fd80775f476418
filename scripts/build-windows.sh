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

. scripts/windows/toolchain.sh
windows_toolchain scripts/build-windows.sh
$cargo build --release --bin iomodels "${target[@]}" "$@" >&2
exe="$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/release/iomodels.exe"
[ -f "$exe" ] || { echo "scripts/build-windows.sh: no $exe after the build" >&2; exit 1; }
echo "$exe"
