#!/usr/bin/env bash
# What the kernel does for one server per call under h2load: system calls,
# context switches and page faults (perf's software events, which work
# where the hardware counters do not), and the server's user and system
# CPU time apart (/proc/PID/stat). Together with callgrind.sh (user-space
# instructions) it tells whether a difference between two servers is in
# their own code or in what they ask of the kernel.
# usage: syscalls.sh NAME BIN|echo [CALLS]
#   BIN: a tollgate binary (GetOrganization with the bootstrap key), or
#   "echo": the bench's echo baseline (BENCH: the directory of tollgate-bench).
#   SERVER_ARGS: more `tollgate serve` arguments, split on spaces.
#   STRACE=1: afterwards, 50,000 more calls under `strace -c -f`, for the
#   mix of system calls (strace slows the server; read it as counts).
# Needs h2load (nghttp2-client) and perf (linux-perf); writes /tmp/syscalls/NAME.
set -uo pipefail
NAME=$1; BIN=$2; N=${3:-300000}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$HOME/.cache/tollgate/target}/release}
T=/tmp/syscalls/$NAME; rm -rf "$T"; mkdir -p "$T"
python3 "$(dirname "$0")/grpc_body.py" "$T/body"
read -r -a EXTRA <<< "${SERVER_ARGS:-}"
source "$(dirname "$0")/target.sh"
start_target "$BIN" "$T" 1
kill -0 $PID 2>/dev/null || { echo "the server did not start: $T/log" >&2; exit 1; }
H=(-H content-type:application/grpc -H te:trailers -H "x-api-key:$KEY")
h2load -c 4 -m 8 -t 1 -n 20000 -d "$T/body" "${H[@]}" "$URL" > "$T/warm"
perf stat -x, -e task-clock,context-switches,cpu-migrations,page-faults,raw_syscalls:sys_enter \
  -p $PID -o "$T/stat" & SP=$!
sleep 0.3
read -r -a S0 < /proc/$PID/stat
h2load -c 4 -m 8 -t 1 -n "$N" -d "$T/body" "${H[@]}" "$URL" > "$T/h2load"
read -r -a S1 < /proc/$PID/stat
kill -INT $SP; wait $SP
if [[ -n ${STRACE:-} ]]; then
  timeout 20 strace -c -f -p $PID -o "$T/strace" & STP=$!; sleep 1
  h2load -c 4 -m 8 -t 1 -n 50000 -d "$T/body" "${H[@]}" "$URL" > "$T/h2load-strace"
  sleep 0.2; kill -INT $STP 2>/dev/null; wait $STP
fi
kill $PID; wait $PID 2>/dev/null
grep -E "^finished in|^requests:" "$T/h2load"
# utime and stime are fields 14 and 15, in clock ticks.
TICK=$(getconf CLK_TCK)
awk -v n="$N" -v t="$TICK" -v u=$(( S1[13] - S0[13] )) -v s=$(( S1[14] - S0[14] )) 'BEGIN {
  printf "%-26s %8.2f µs per call\n%-26s %8.2f µs per call\n", "user CPU", u / t * 1e6 / n, "system CPU", s / t * 1e6 / n }'
awk -F, -v n="$N" '/^[0-9]/ {
  if ($3 == "task-clock") printf "%-26s %8.2f µs per call\n", "task-clock (perf)", $1 * 1000 / n
  else printf "%-26s %8.3f per call\n", $3, $1 / n }' "$T/stat"
[[ -s $T/strace ]] && echo "strace -c: $T/strace"
