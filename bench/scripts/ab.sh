#!/usr/bin/env bash
# Server CPU per call of two tollgate builds side by side with the bench's echo
# baseline, under the same h2load load, in rotating order (a diagnostic for
# before/after comparisons; the targets are judged by tollgate-bench).
# usage: ab.sh ROUNDS SECS "BIN_A ARGS..." "BIN_B ARGS..."  (BENCH: dir of tollgate-bench)
set -euo pipefail
ROUNDS=$1; SECS=$2; A=$3; B=$4
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$HOME/.cache/tollgate/target}/release}
T=/tmp/ab; rm -rf $T; mkdir -p $T/a $T/b
python3 "$(dirname "$0")/grpc_body.py" /tmp/ab/body
$BENCH/tollgate-bench echo-server --listen 127.0.0.1:7001 > $T/echo.log 2>&1 & EPID=$!
start() { local dir=$1 port=$2; shift 2; local bin=$1; shift
  $bin serve --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$((port+1)) --database-url sqlite://$dir/t.db --bootstrap-key-file $dir/key --log-level info "$@" > $dir/log 2>&1 & echo $!; }
APID=$(start $T/a 7002 $A); BPID=$(start $T/b 7004 $B)
trap 'kill $EPID $APID $BPID 2>/dev/null' EXIT
for i in $(seq 200); do [[ -s $T/a/key && -s $T/b/key ]] && break; sleep 0.1; done; sleep 1
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
one() { # name pid port path key
  local url=http://127.0.0.1:$3$4
  h2load -c 4 -m 8 -t 1 -D 1 -d $T/body -H 'content-type: application/grpc' -H 'te: trailers' -H "x-api-key: $5" $url >/dev/null
  local c0=$(cpu $2)
  h2load -c 4 -m 8 -t 1 -D $SECS -d $T/body -H 'content-type: application/grpc' -H 'te: trailers' -H "x-api-key: $5" $url > $T/h2
  local c1=$(cpu $2); local n=$(awk '/^requests:/{print $8}' $T/h2)
  python3 -c "print('$1', $n, round(($c1-$c0)*1e6/100/$n,2))" >> $T/results
}
GO=/tollgate.v1.OrganizationService/GetOrganization
for r in $(seq $ROUNDS); do
  order="e a b"; (( r % 2 == 0 )) && order="b a e"
  for x in $order; do case $x in
    e) one echo $EPID 7001 /tollgate.bench.echo.v1.EchoService/Echo x;;
    a) one A $APID 7002 $GO $(cat $T/a/key);;
    b) one B $BPID 7004 $GO $(cat $T/b/key);;
  esac; done
done
python3 - <<'PY'
import statistics as st, collections
rows=[l.split() for l in open('/tmp/ab/results')]
by=collections.defaultdict(list)
for n,c,u in rows: by[n].append((int(c),float(u)))
R=len(by['echo'])
for n in ['echo','A','B']: print(n, 'calls/s', [c for c,_ in by[n]], 'us/call', [u for _,u in by[n]])
ra=[by['A'][i][1]/by['echo'][i][1] for i in range(R)]; rb=[by['B'][i][1]/by['echo'][i][1] for i in range(R)]; rba=[by['B'][i][1]/by['A'][i][1] for i in range(R)]
print('A/echo median %.3f %s'%(st.median(ra),[round(x,2) for x in ra]))
print('B/echo median %.3f %s'%(st.median(rb),[round(x,2) for x in rb]))
print('B/A    median %.3f %s'%(st.median(rba),[round(x,2) for x in rba]))
PY
