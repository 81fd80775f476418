# Sourced by scripts/build-windows.sh and scripts/test-windows.sh: the Windows toolchain both
# use. `windows_toolchain NAME [PACKAGE...]` installs, when missing, Debian's Rust "web"
# toolchain with its std sources (this machine's rustup cannot download targets; std is built
# for the target with -Zbuild-std), mingw, and the extra PACKAGEs (NAME is the calling script,
# for its messages); then exports the cargo settings: Debian's rustc, linked by mingw, into a
# target directory of its own (IOMODELS_WINDOWS_TARGET_DIR, default target/windows) so the
# Linux build (rustup's toolchain) and this one never invalidate each other. It sets `cargo`
# and `target` (the -Zbuild-std and --target arguments) for the caller.
windows_toolchain() {
  local name=$1
  shift
  local missing=() p
  for p in rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64 "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "$name: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
  export CARGO_TARGET_DIR="${IOMODELS_WINDOWS_TARGET_DIR:-$root/target/windows}"
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
  cargo=/usr/bin/cargo
  target=(-Zbuild-std=std,panic_abort --target x86_64-pc-windows-gnu)
}
