#!/usr/bin/env bash
# The Windows half of the tests: lints the workspace for x86_64-pc-windows-gnu (clippy, every
# target, -D warnings: any finding fails the run before a test starts), builds it and runs the
# Windows tests (the conformance suites for every Winsock model — TCP, TLS and UDP
# (udp_conformance) —, the adversarial suite, the limits and faults, the Windows edge cases, the
# core's unit tests: every test file of iomodels-server; the load generator's unit and
# integration tests; the bench's Windows process tests) under Wine, headless, then the binary as
# a user meets it (`serve` against socat, `load` against a Linux and a Windows `serve`, the UDP
# tools across the two OSes, `bench --quick` end to end). Installs what it needs when missing:
# Debian's Rust "web" toolchain with its std sources (this machine's rustup cannot download
# targets) and its clippy (rust-web-clippy), mingw, Wine and jq.
# See ../shared/notes/windows-under-wine.md for why each piece is there.
#
# Usage: scripts/test-windows.sh [extra cargo test arguments, e.g. a test-name filter]
# Env: IOMODELS_WINE_PREFIX (default target/wine-prefix) keeps the Wine prefix between runs;
# IOMODELS_WINDOWS_TARGET_DIR (default target/windows) is the cargo target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)

# 1. Packages and 2. the toolchain (scripts/windows/toolchain.sh): Debian's rustc with its own
# std sources, built for the target (-Zbuild-std), linked by mingw, run by Wine.
. scripts/windows/toolchain.sh
# (rust-web-clippy: the clippy of that same toolchain, for step 4; jq reads `load --json`.)
windows_toolchain scripts/test-windows.sh wine wine64 socat jq rust-web-clippy
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine

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
wineserver -p 2>/dev/null || true  # (fails if one already runs: fine)
# Boot the prefix's services now, with their output going nowhere: the services (winedevice)
# inherit the stdio of the first `wine` process, and would hold a pipe read by this script
# (`$(wine ...)`, `| tee`) open until the wineserver exits.
wine wineboot </dev/null >/dev/null 2>&1 || true
trap 'wineserver -k 2>/dev/null || true' EXIT

# 4. Lint, build everything, then run the tests.
# Clippy on the Windows build, as .ci/run does for Linux: every crate and target (tests,
# examples), warnings denied, and the workspace lints of Cargo.toml (every unsafe operation in
# its own `unsafe` block, every block with a `// SAFETY:` comment). Debian's clippy (1.96, the
# rustc-web toolchain that builds std here): /usr/bin first in PATH, or cargo would pick
# rustup's cargo-clippy (1.95, which cannot read this std). Any finding fails the run here.
echo "== windows: cargo clippy (workspace, all targets, x86_64-pc-windows-gnu, -D warnings)"
if ! PATH="/usr/bin:$PATH" $cargo clippy --keep-going --workspace --all-targets "${target[@]}" -- -D warnings; then
  echo "windows: clippy found something in the Windows build (above); fix it" >&2
  exit 1
fi
echo "== windows: cargo build (workspace, x86_64-pc-windows-gnu)"
# The build's own warnings fail the run too (cargo shows warnings of workspace crates only:
# std and dependencies are capped).
build_log=$(mktemp)
$cargo build --workspace --lib --bins --tests "${target[@]}" 2>&1 | tee "$build_log"
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
if grep -q '^warning' "$build_log"; then
  echo "windows: the Windows build has warnings (above); fix them" >&2
  rm -f "$build_log"
  exit 1
fi
rm -f "$build_log"
echo "== windows: iomodels models (under Wine)"
models_out=$(wine "$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/debug/iomodels.exe" models)
echo "$models_out"
# Every model of the table (for_each_model! in crates/server/src/model.rs), as the binary lists
# them, available or not: the per-model checks below go through this list.
models=$(awk 'NR > 1 { print $1 }' <<<"$models_out")
if [ -z "$models" ]; then
  echo "windows: 'iomodels models' listed no model" >&2
  exit 1
fi
echo "== windows: cargo test (under Wine)"
log=$(mktemp)
set +e
# A hung test must fail the run, not stall CI: each `cargo test` gets IOMODELS_TEST_TIMEOUT
# seconds (default 1200; the server's take ~3 min under Wine). The exit trap then kills
# whatever Wine still runs. --no-fail-fast: a failing test binary must not hide the ones after
# it (cargo stops at the first otherwise).
limit=${IOMODELS_TEST_TIMEOUT:-1200}
hung() {
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored ($1 hung: stopped after $limit s)" | tee -a "$log"
}
timeout -k 30 "$limit" $cargo test "${target[@]}" --no-fail-fast -p iomodels-core -p iomodels-server --lib --tests "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
[ "$status" != 124 ] || hung "the core and server tests"
# The load generator: its unit tests (with the Windows poll's own: WSAPoll's level readiness,
# the edge emulation) and its integration tests (load, tls, udp: every mode against the real
# servers). --no-fail-fast, as above.
timeout -k 30 "$limit" $cargo test "${target[@]}" --no-fail-fast -p iomodels-load --lib --tests "$@" 2>&1 | tee -a "$log"
lstatus=${PIPESTATUS[0]}
[ "$lstatus" != 124 ] || hung "the load generator's tests"
[ "$lstatus" = 0 ] || status=1
# What bench needs from a served child on Windows (tests/bench_windows.rs): its control events
# (counters, stop), the process API measuring it (CPU time, working set, handles), placing it
# (affinity, priority), Wine told apart.
timeout -k 30 "$limit" $cargo test "${target[@]}" -p iomodels --test bench_windows "$@" 2>&1 | tee -a "$log"
bstatus=${PIPESTATUS[0]}
[ "$bstatus" != 124 ] || hung "the bench's Windows process tests"
[ "$bstatus" = 0 ] || status=1
set -e
# The binary as a user meets it: `iomodels.exe serve` for every model under Wine, a peer
# nobody here wrote (socat, a Linux process) echoing 256 KiB through it, then SIGINT (which
# Wine turns into Ctrl-C): the server must stop gracefully and exit 0. Twice: over plain TCP,
# then over TLS (`serve --tls-self-signed --tls-cert-out Z:/...`: the Windows process writes
# its certificate through Wine's Z: drive, which maps /, and `socat OPENSSL:` trusts that file
# and nothing else). Then over UDP (`serve --udp`): one `socat - UDP:` per datagram (1, 1,400,
# 8,192 and 30,000 random bytes; `-b 65536` so socat reads each file whole, one datagram),
# each echo compared byte for byte, and the exit line must count the four in and out.
# (socat, built with OpenSSL, is installed with the packages above.)
exe="$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/debug/iomodels.exe"
payload=$(mktemp) echoed=$(mktemp) served=$(mktemp) peer_err=$(mktemp) tls_dir=$(mktemp -d)
dgram_dir=$(mktemp -d)
head -c 262144 /dev/urandom >"$payload"
dgram_sizes=(1 1400 8192 30000)
for n in "${dgram_sizes[@]}"; do head -c "$n" /dev/urandom >"$dgram_dir/$n"; done
cli_pass=0 cli_fail=0
# udp_echoes NAME ADDR: every datagram of $dgram_dir through the server; false on the first
# that does not come back intact.
udp_echoes() {
  local name=$1 addr=$2 n
  for n in "${dgram_sizes[@]}"; do
    if ! timeout 10 socat -t1 -b65536 - "UDP:$addr" <"$dgram_dir/$n" >"$echoed" 2>"$peer_err" \
      || ! cmp -s "$dgram_dir/$n" "$echoed"; then
      echo "$name: socat's $n-byte datagram did not come back intact ($(stat -c %s "$echoed") bytes): $(head -c 300 "$peer_err")" >&2
      return 1
    fi
  done
}
# start_served CMD...: starts a server in the background, its output in $served; sets
# served_pid, and served_addr to the address of its ready line ("" if none came).
start_served() {
  # Emptied here, not by the redirection below: that runs in the background child, and the
  # loop that looks for the ready line could read the last run's line (and port) before it.
  : >"$served"
  "$@" >"$served" 2>&1 &
  served_pid=$! served_addr=""
  # Up to 60 s for the ready line: a Wine process starts in well under a second alone, but in
  # many seconds beside other Wine processes on a busy machine.
  for _ in $(seq 600); do
    served_addr=$(sed -n 's/^listening on \([^ ]*\) .*/\1/p' "$served")
    [ -n "$served_addr" ] && break
    sleep 0.1
  done
}
# stop_served NAME: SIGINT (Wine turns it into Ctrl-C) to the server started last, then up to
# 30 s for it to exit (SIGKILL after that); sets served_rc to its exit status; false if it did
# not stop in time.
stop_served() {
  local late=0
  served_rc=0
  kill -INT "$served_pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$served_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$served_pid" 2>/dev/null; then
    echo "$1 did not stop within 30 s of SIGINT" >&2
    kill -9 "$served_pid" 2>/dev/null || true
    late=1
  fi
  wait "$served_pid" || served_rc=$?
  [ "$late" = 0 ]
}
# serve_and_echo MODEL tcp|tls|udp: one run; counts a pass or a failure.
serve_and_echo() {
  local m=$1 mode=$2 name="windows cli: $1" cert="" peer
  local args=(serve --model "$m" --listen 127.0.0.1:0)
  if [ "$mode" = tls ]; then
    name="windows cli tls: $m"
    cert="$tls_dir/$m.pem"
    args+=(--tls-self-signed --tls-cert-out "Z:$cert")
  elif [ "$mode" = udp ]; then
    name="windows cli udp: $m"
    args+=(--udp)
  fi
  start_served wine "$exe" "${args[@]}"
  local addr=$served_addr ok=1 rc=0
  peer="TCP:$addr"
  [ "$mode" = tcp ] || peer="OPENSSL:$addr,cafile=$cert,commonname=localhost"
  if [ -z "$addr" ]; then
    echo "$name did not start: $(head -c 300 "$served")" >&2
    ok=0
  elif [ "$mode" = tls ] && ! grep -q 'over TLS)$' "$served"; then
    echo "$name: the ready line does not say TLS: $(grep '^listening' "$served")" >&2
    ok=0
  elif [ "$mode" = tls ] && [ ! -s "$cert" ]; then
    echo "$name: no certificate written to Z:$cert" >&2
    ok=0
  elif [ "$mode" = udp ] && ! grep -q 'over TCP and UDP)$' "$served"; then
    echo "$name: the ready line does not say UDP: $(grep '^listening' "$served")" >&2
    ok=0
  elif [ "$mode" = udp ]; then
    udp_echoes "$name" "$addr" || ok=0
  elif ! timeout 30 socat -t5 - "$peer" <"$payload" >"$echoed" 2>"$peer_err" || ! cmp -s "$payload" "$echoed"; then
    echo "$name: socat's 256 KiB did not come back intact ($(stat -c %s "$echoed") bytes): $(head -c 300 "$peer_err")" >&2
    ok=0
  fi
  stop_served "$name" || ok=0
  rc=$served_rc
  local served_line='stopped: 1 connections served'
  if [ "$mode" = udp ]; then
    served_line="UDP: ${#dgram_sizes[@]} datagrams in, ${#dgram_sizes[@]} echoed, 0 dropped unanswered, 0 oversized"
  fi
  if [ "$ok" = 1 ] && { [ "$rc" != 0 ] || ! grep -qF "$served_line" "$served"; }; then
    echo "$name exited $rc after SIGINT: $(tail -n 3 "$served")" >&2
    ok=0
  fi
  # socat sends close_notify: a clean TLS run logs no warning about its connection.
  if [ "$ok" = 1 ] && [ "$mode" = tls ] && grep -q 'tls: .*\(truncated\|connection closed\)' "$served"; then
    echo "$name: the server logged a TLS failure: $(grep 'tls: ' "$served" | tail -n 2)" >&2
    ok=0
  fi
  if [ "$ok" = 1 ]; then cli_pass=$((cli_pass + 1)); echo "$name ok"; else cli_fail=$((cli_fail + 1)); fi
}
for mode in tcp tls udp; do
  for m in $models; do
    serve_and_echo "$m" "$mode"
  done
done
# The UDP tools across the two OSes: the Linux `iomodels udp send` to `iomodels.exe udp recv`
# under Wine — unicast, then to a multicast group the Windows receiver joined on 127.0.0.1 —
# and `iomodels.exe udp send` to a Linux receiver of a group. Each receiver must count all 200
# datagrams of the sender's run, none lost. The Linux binary is the one the Linux tests built
# (scripts/test.sh runs them first); alone, this script builds it (rustup's toolchain, the
# default target directory).
linux_exe="$root/target/debug/iomodels"
if [ ! -x "$linux_exe" ]; then
  env -u RUSTC -u RUSTDOC -u RUSTC_BOOTSTRAP -u CARGO_TARGET_DIR cargo build -q --bin iomodels
fi
udp_port=$((40000 + $$ % 20000))
group="239.255.$(($$ % 251)).77"
# udp_tool NAME RECEIVER SENDER DEST: starts `RECEIVER udp recv` (bound on DEST's port, and
# joined to DEST's group when it is one), then `SENDER udp send --to DEST` 200 datagrams, and
# checks the receiver's JSON; counts a pass or a failure.
udp_tool() {
  local name=$1 dest=$4 rx tx join=() send=() rpid ok=1
  read -ra rx <<<"$2"
  read -ra tx <<<"$3"
  if [ "${dest%%.*}" = 239 ]; then
    join=(--listen "0.0.0.0:${dest##*:}" --multicast "${dest%:*}" --iface 127.0.0.1)
    send=(--iface 127.0.0.1 --loop)
  else
    join=(--listen "$dest")
  fi
  : >"$peer_err" # (emptied before the start: see serve_and_echo)
  timeout 60 "${rx[@]}" udp recv "${join[@]}" --count 200 --duration 30s --json >"$echoed" 2>"$peer_err" &
  rpid=$!
  # A bound on a hang, not a timing: a Wine start on a loaded machine took over 15 s once.
  for _ in $(seq 600); do grep -q 'listening on' "$peer_err" && break; sleep 0.1; done
  if ! grep -q 'listening on' "$peer_err"; then
    echo "$name: the receiver did not start: $(head -c 300 "$peer_err")" >&2
    ok=0
  elif ! timeout 60 "${tx[@]}" udp send --to "$dest" "${send[@]}" --count 200 --rate 2000 >"$served" 2>&1; then
    echo "$name: the sender failed: $(tail -n 3 "$served")" >&2
    ok=0
  fi
  wait "$rpid" || ok=0
  if [ "$ok" = 1 ] && ! grep -q '"received":200,"unique":200,"lost":0' "$echoed"; then
    echo "$name: the receiver did not count 200 of 200: $(head -c 400 "$echoed") $(head -c 200 "$peer_err")" >&2
    ok=0
  fi
  if [ "$ok" = 1 ]; then cli_pass=$((cli_pass + 1)); echo "$name ok"; else cli_fail=$((cli_fail + 1)); fi
}
udp_tool "windows cli udp tools: Linux send -> Windows recv (unicast)" "wine $exe" "$linux_exe" "127.0.0.1:$udp_port"
udp_tool "windows cli udp tools: Linux send -> Windows recv ($group)" "wine $exe" "$linux_exe" "$group:$((udp_port + 1))"
udp_tool "windows cli udp tools: Windows send -> Linux recv ($group)" "$linux_exe" "wine $exe" "$group:$((udp_port + 2))"
# `iomodels.exe load` under Wine as a user runs it, against the Linux `iomodels serve` and
# against `iomodels.exe serve` (completion-port, its default): plain TCP, TLS (the server's
# self-signed certificate, trusted with --tls-ca through Z:), UDP and --idle. Each run is
# bounded (8 connections x 200 messages at depth 4, or 20 idle connections held 1 s, each
# echoing every 200 ms) and must exit 0 with its --json, read by jq, saying every message
# came back and verified: zero mismatches, `error` null. Then SIGINT stops the server, which
# must exit 0.
# load_check linux|windows tcp|tls|udp|idle: one run; counts a pass or a failure.
load_check() {
  local side=$1 mode=$2 name="windows cli load: $2 against the $1 server" cert="" ok=1 addr="" rc=0 check
  local srv=() cli=(load --conns 8 --depth 4 --messages 200 --duration 20s --json)
  if [ "$side" = linux ]; then srv=("$linux_exe" serve); else srv=(wine "$exe" serve); fi
  srv+=(--listen 127.0.0.1:0)
  check='.conns_established == 8 and .messages == 1600 and .bytes == 1600 * 64'
  case $mode in
    tls)
      cert="$tls_dir/load-$side.pem"
      # (The Windows server writes it through Wine's Z: drive, which maps /.)
      if [ "$side" = linux ]; then srv+=(--tls-self-signed --tls-cert-out "$cert")
      else srv+=(--tls-self-signed --tls-cert-out "Z:$cert"); fi
      cli+=(--tls --tls-ca "Z:$cert")
      check="$check and .tls == true" ;;
    udp)
      srv+=(--udp)
      cli+=(--udp)
      # (A datagram lost on loopback would be counted, not an error: sent = echoed + lost.)
      check='.udp.sent == 1600 and .udp.received + .udp.lost == 1600 and .messages == .udp.received and .messages > 0' ;;
    idle)
      cli=(load --idle --conns 20 --duration 1s --echo-every 200ms --json)
      check='.conns_held == 20 and .conns_still_open == 20 and .message_errors == 0 and .messages > 0' ;;
  esac
  start_served "${srv[@]}"
  addr=$served_addr
  if [ -z "$addr" ]; then
    echo "$name: the server did not start: $(head -c 300 "$served")" >&2
    ok=0
  elif ! timeout 60 wine "$exe" "${cli[@]}" --connect "$addr" >"$echoed" 2>"$peer_err"; then
    echo "$name: iomodels.exe load failed: $(tail -n 2 "$peer_err") $(head -c 300 "$echoed")" >&2
    ok=0
  elif ! jq -e "(.error == null) and ((.mismatches // 0) == 0) and ($check)" "$echoed" >/dev/null; then
    echo "$name: the JSON does not show a clean, verified run: $(head -c 600 "$echoed")" >&2
    ok=0
  fi
  stop_served "$name: the server" || ok=0
  rc=$served_rc
  if [ "$ok" = 1 ] && [ "$rc" != 0 ]; then
    echo "$name: the server exited $rc after SIGINT: $(tail -n 2 "$served")" >&2
    ok=0
  fi
  if [ "$ok" = 1 ]; then cli_pass=$((cli_pass + 1)); echo "$name ok"; else cli_fail=$((cli_fail + 1)); fi
}
for side in linux windows; do
  for mode in tcp tls udp idle; do
    load_check "$side" "$mode"
  done
done
# `iomodels.exe bench --quick` end to end under Wine (one repetition: about two minutes):
# every Windows model has a row that ran in every quick scenario, no echo differed (bench exits
# non-zero on a mismatch), the JSON and the report are written (through Wine's Z: drive), and
# the table, the JSON and the report say Wine, with the report's note that the figures are
# Wine's socket layer.
bench_dir=$(mktemp -d)
bench_name="windows cli: iomodels.exe bench --quick"
bench_ok=1
bench_models=$(grep -c ' yes' <<<"$models_out" || true)
if ! timeout 900 wine "$exe" bench --quick --repeat 1 --json "Z:$bench_dir/bench.json" \
    --report "Z:$bench_dir/report.html" >"$bench_dir/table.txt" 2>"$bench_dir/err.txt" </dev/null; then
  echo "$bench_name failed: $(tail -n 5 "$bench_dir/err.txt") $(grep -i 'mismatch\|not run' "$bench_dir/table.txt" | head -n 5)" >&2
  bench_ok=0
elif [ ! -s "$bench_dir/bench.json" ] || [ ! -s "$bench_dir/report.html" ]; then
  echo "$bench_name: no JSON or no report written" >&2
  bench_ok=0
elif ! jq -e '[.scenarios[] | select(.rows | length == 7 and all(.ran))] | length == 4' "$bench_dir/bench.json" >/dev/null \
    || [ "$bench_models" != 7 ]; then
  echo "$bench_name: not every one of the $bench_models models ran in the 4 quick scenarios: $(grep -B1 'not run' "$bench_dir/table.txt" | head -n 6)" >&2
  bench_ok=0
elif ! jq -e 'all(.scenarios[].rows[]; .mismatches == 0)' "$bench_dir/bench.json" >/dev/null; then
  echo "$bench_name: echoed bytes differed: $(grep -i mismatch "$bench_dir/table.txt" | head -n 3)" >&2
  bench_ok=0
elif ! jq -e '.machine.os == "windows" and (.machine.wine | type == "string")' "$bench_dir/bench.json" >/dev/null \
    || ! grep -q '^machine: .*windows (under Wine ' "$bench_dir/table.txt" \
    || ! grep -q '<dd>windows (under Wine ' "$bench_dir/report.html" \
    || ! grep -q 'Wine&#39;s user-space socket layer' "$bench_dir/report.html"; then
  echo "$bench_name: the machine is not labelled as Wine: $(grep '^machine' "$bench_dir/table.txt")" >&2
  bench_ok=0
fi
if [ "$bench_ok" = 1 ]; then
  cli_pass=$((cli_pass + 1)); echo "$bench_name ok"
  sed -n '/^== pp64-100/,/^$/p' "$bench_dir/table.txt"
else
  cli_fail=$((cli_fail + 1))
fi
rm -rf "$payload" "$echoed" "$served" "$peer_err" "$tls_dir" "$dgram_dir" "$bench_dir"
echo "test result: cli. $cli_pass passed; $cli_fail failed; 0 ignored (iomodels.exe serve under Wine, plain, TLS and UDP, socat from Linux; udp send/recv across the two; iomodels.exe load against a Linux and a Windows serve, plain, TLS, UDP, idle; bench --quick)" | tee -a "$log"
[ "$cli_fail" = 0 ] || status=1
# The binary must list every model as available, with its Winsock mechanism.
for m in $models; do
  if ! grep -q "^$m .*yes" <<<"$models_out"; then
    echo "windows: 'iomodels models' does not list $m as available" >&2
    status=1
  fi
done
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     /^windows skipped: / { s += $3 }
     END { printf "windows tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
rm -f "$log"
echo "windows: took $(( $(date +%s) - started )) s"
exit "$status"
