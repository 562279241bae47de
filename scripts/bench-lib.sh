# Shared by the benchmark scripts (sourced from the repository's root):
# set up a temporary directory and the binaries, pick free loopback ports,
# and wait for servers.

# bench_setup makes $tmp (each server's log goes there; removed on exit,
# after every process in $started and the load tool's round in $current
# are stopped) and $out for the reports (OUT, else under $tmp), and builds
# tiergate (or copies TIERGATE_BIN) and tiergate-load into $tmp.
bench_setup() {
  tmp=$(mktemp -d)
  out=${OUT:-$tmp/reports}
  mkdir -p "$out"
  started=()
  current=""
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  echo "building into $tmp" >&2
  if [ -n "${TIERGATE_BIN:-}" ]; then cp "$TIERGATE_BIN" "$tmp/tiergate"; else go build -o "$tmp/tiergate" ./cmd/tiergate; fi
  go build -o "$tmp/tiergate-load" ./cmd/tiergate-load
}

bench_cleanup() {
  for p in $current "${started[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in $current "${started[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}

# free_port VAR sets VAR to a loopback port nothing listens on and not
# picked before, below the ephemeral range so that no outgoing connection
# takes it in the meantime.
picked=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    case $picked in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then picked="$picked$p "; printf -v "$1" %s "$p"; return; fi
  done
}

# wait_port waits until something listens on port $1, or process $2 dies.
wait_port() {
  local name=${0##*/}
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || { echo "${name%.sh}: process $2 exited; its log:" >&2; cat "$tmp"/*.log >&2; exit 1; }
    sleep 0.1
  done
  echo "${name%.sh}: nothing listens on $1 after 10s" >&2; exit 1
}
