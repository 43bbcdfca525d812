# Sourced by callgrind.sh and syscalls.sh: starts the server they measure.
# start_target BIN|echo DIR SETTLE [WRAPPER...] runs, under WRAPPER (say
# valgrind), either BIN serving GetOrganization with its bootstrap key
# (EXTRA: more `serve` arguments, an array), or the bench's echo (BENCH:
# the directory of tollgate-bench) with a key of a real key's shape, so
# both servers decode the same header. It waits SETTLE seconds once the
# server is up and sets PID, URL and KEY; the server writes to DIR/log.
start_target() {
  local bin=$1 dir=$2 settle=$3; shift 3
  if [[ $bin == echo ]]; then
    "$@" "$BENCH/tollgate-bench" echo-server --listen 127.0.0.1:7101 > "$dir/log" 2>&1 & PID=$!
    URL=http://127.0.0.1:7101/tollgate.bench.echo.v1.EchoService/Echo
    KEY=tg_$(printf 'q%.0s' {1..16})_$(printf 'Z%.0s' {1..43})
  else
    "$@" "$bin" serve --listen 127.0.0.1:7101 --admin-listen 127.0.0.1:7102 \
      --database-url "sqlite://$dir/t.db" --bootstrap-key-file "$dir/key" --log-level info \
      "${EXTRA[@]}" > "$dir/log" 2>&1 & PID=$!
    for _ in $(seq 600); do [[ -s $dir/key ]] && break; kill -0 $PID 2>/dev/null || break; sleep 0.2; done
    URL=http://127.0.0.1:7101/tollgate.v1.OrganizationService/GetOrganization; KEY=$(cat "$dir/key")
  fi
  sleep "$settle"
}
