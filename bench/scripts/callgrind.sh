#!/usr/bin/env bash
# Instructions per call of one server under valgrind's callgrind: a figure
# that is the same on every run, whatever else the machine does (the CPU
# figures of the suites move by several percent between runs).
# usage: callgrind.sh NAME BIN|echo [CALLS] [callgrind options...]
#   BIN: a tollgate binary (GetOrganization with the bootstrap key), or
#   "echo": the bench's echo baseline (BENCH: the directory of tollgate-bench).
#   RATE_LIMIT=on: a policy limiting GetOrganization (10^9/s, as the
#   ratelimit-server bench's) is created first; RATE_LIMIT=off: the server
#   runs with --rate-limiting false. Unset: the default server, no policy.
#   IDLE_SECS: instead of the measured calls, leave the server idle this
#   long (as long as a measured run takes, see its h2load output) and
#   charge what the background did to CALLS calls.
#   SERVER_ARGS: more `tollgate serve` arguments, split on spaces (say
#   "--otlp-endpoint http://127.0.0.1:4317 --trace-sample-ratio 1").
# Writes /tmp/callgrind/NAME/cg.out.1; read it with callgrind_annotate.
# valgrind's CPU has no SHA-NI: sha2 runs its software rounds there.
set -uo pipefail
NAME=$1; BIN=$2; N=${3:-20000}; shift $(( $# < 3 ? $# : 3 ))
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$HOME/.cache/tollgate/target}/release}
T=/tmp/callgrind/$NAME; rm -rf "$T"; mkdir -p "$T"
python3 "$(dirname "$0")/grpc_body.py" "$T/body"
VG=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$T/cg.out" "$@")
EXTRA=(); [[ ${RATE_LIMIT:-} == off ]] && EXTRA=(--rate-limiting false)
read -r -a MORE <<< "${SERVER_ARGS:-}"; EXTRA+=("${MORE[@]}")
source "$(dirname "$0")/target.sh"
# valgrind takes seconds to start the echo, which writes no key file.
start_target "$BIN" "$T" "$([[ $BIN == echo ]] && echo 8 || echo 3)" "${VG[@]}"
if [[ $BIN != echo && ${RATE_LIMIT:-} == on ]]; then
  curl -sf -X POST -H "x-api-key: $KEY" -H content-type:application/json -o /dev/null \
    "http://127.0.0.1:7101/v1/organizations/root/rateLimitPolicies?rate_limit_policy_id=bench" \
    -d '{"display_name":"bench","selector":{"method":"/tollgate.v1.OrganizationService/GetOrganization"},"limit":{"limit":"1000000000","period":"SECOND"}}'
  sleep 2
fi
H=(-H content-type:application/grpc -H te:trailers -H "x-api-key:$KEY")
h2load -c 4 -m 8 -t 1 -n 2000 -d "$T/body" "${H[@]}" "$URL" > "$T/warm"
callgrind_control -i on $PID > /dev/null
if [[ -n ${IDLE_SECS:-} ]]; then
  # The background alone (timers, the job worker's polls, metrics upkeep)
  # for as long as a measured run takes, charged to N calls like one.
  sleep "$IDLE_SECS"; printf 'requests: none (idle %s s)\n' "$IDLE_SECS" > "$T/h2load"
else
  h2load -c 4 -m 8 -t 1 -n "$N" -d "$T/body" "${H[@]}" "$URL" > "$T/h2load"
fi
callgrind_control -d $PID > /dev/null
kill $PID; wait $PID 2>/dev/null
grep -E "^requests:|^status codes:" "$T/h2load"
total=$(callgrind_annotate --auto=no "$T/cg.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "$NAME: $(( total / N )) instructions per call ($T/cg.out.1)"
