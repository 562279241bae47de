#!/usr/bin/env bash
# Measures what tiergate costs a client through real Envoy (the pinned
# version, envoy/envoy.yaml rewritten only to move its ports, reach a local
# provider over plain HTTP and, for the floor, drop ext_proc), against the
# same Envoy in front of the null ext_proc server.
#
# Five configurations, each its own Envoy (and ext_proc server), all in
# front of one stand-in provider (`tiergate-load http-upstream`: a completed
# Responses answer with usage, so the response phases and tiergate's
# accounting run too):
#   none      Envoy without the ext_proc filter
#   null      Envoy + the null ext_proc server (CONTINUE to everything)
#   tiergate  Envoy + tiergate serve (default policy: filter priority)
#   null2     Envoy + a second null server: null against null2 is the run's
#             own noise
#   contract  Envoy + the null server answering as tiergate answers (the body
#             sent back with its content-length, and metadata of tiergate's
#             shape on the body answer and the response's last): what the
#             contract costs Envoy, apart from what tiergate's work costs
# ROUNDS (default 8) rounds of DURATION seconds (default 8, after 1 s of
# warm-up) per configuration, the order rotating from round to round, all
# with the same load: h2load (HTTP/2 without TLS) posting the load tool's
# 2 KiB Responses body asking for priority, with Codex's headers, over
# CLIENTS connections of STREAMS streams each (4 x 4), which every Envoy
# spreads evenly over its workers (exact balance: left to the kernel, all
# four land on one worker in some rounds, and those rounds run a third
# faster whatever the server). Reported per round
# and as medians: throughput, client p50 and p99 (from h2load's per-request
# log), and each ext_proc server's and Envoy's CPU per request. Then one
# round per configuration with wrk (HTTP/1.1, 16 connections) as a
# cross-check of h2load (WRK=0 skips it).
#
# Every round is checked: h2load must see no failure and only 2xx, and the
# provider must have received every request still asking for priority
# through none, null, null2 and contract, and none through tiergate.
#
# Installs h2load (nghttp2-client) and wrk from Debian when missing, and the
# pinned Envoy (scripts/install-envoy, or TIERGATE_ENVOY). Needs go, jq and
# curl. Listens on loopback only. OUT=dir keeps the raw outputs;
# TIERGATE_BIN=path measures a tiergate built elsewhere; ENVOY_CONCURRENCY
# sets Envoy's workers (default 2, one per core here).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-8}
duration=${DURATION:-8}
clients=${CLIENTS:-4}
streams=${STREAMS:-4}
envoy_workers=${ENVOY_CONCURRENCY:-2}
command -v jq >/dev/null || { echo "bench-envoy: needs jq" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench-envoy: needs curl" >&2; exit 1; }

apt_get() { if [ "$(id -u)" = 0 ]; then apt-get "$@"; else sudo apt-get "$@"; fi; }
need_apt=()
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
if [ "${WRK:-1}" = 1 ]; then command -v wrk >/dev/null || need_apt+=(wrk); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bench-envoy: installing ${need_apt[*]} from Debian" >&2
  apt_get update -qq
  DEBIAN_FRONTEND=noninteractive apt_get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
envoy=${TIERGATE_ENVOY:-$(scripts/install-envoy)}

. "$(dirname "$0")/bench-lib.sh"
bench_setup

"$tmp/tiergate-load" body --size 2048 >"$tmp/body.json"
free_port up_port
"$tmp/tiergate-load" http-upstream --listen "127.0.0.1:$up_port" 2>"$tmp/upstream.log" &
up_pid=$!; started+=("$up_pid")
wait_port "$up_port" "$up_pid"

free_port tg_port; free_port tg_admin; free_port tg_ws
"$tmp/tiergate" serve --usage-log off --log-level warn --extproc-listen "127.0.0.1:$tg_port" \
  --ws-listen "127.0.0.1:$tg_ws" --admin-listen "127.0.0.1:$tg_admin" 2>"$tmp/tiergate.log" &
tg_pid=$!; started+=("$tg_pid")
free_port null_port; free_port null2_port
"$tmp/tiergate-load" null-extproc --listen "127.0.0.1:$null_port" 2>"$tmp/null.log" &
null_pid=$!; started+=("$null_pid")
"$tmp/tiergate-load" null-extproc --listen "127.0.0.1:$null2_port" 2>"$tmp/null2.log" &
null2_pid=$!; started+=("$null2_pid")
free_port contract_port
"$tmp/tiergate-load" null-extproc --echo --metadata --listen "127.0.0.1:$contract_port" 2>"$tmp/contract.log" &
contract_pid=$!; started+=("$contract_pid")
wait_port "$tg_port" "$tg_pid"; wait_port "$null_port" "$null_pid"; wait_port "$null2_port" "$null2_pid"
wait_port "$contract_port" "$contract_pid"

configs=(none null tiergate null2 contract)
declare -A listen server_pid envoy_pid
server_pid[none]=""; server_pid[null]=$null_pid; server_pid[tiergate]=$tg_pid; server_pid[null2]=$null2_pid; server_pid[contract]=$contract_pid
for c in "${configs[@]}"; do
  free_port lp; free_port ap
  listen[$c]=$lp
  # -exact-balance: h2load's few connections split evenly over the two workers in every round.
  opts=(-listen "127.0.0.1:$lp" -admin "127.0.0.1:$ap" -upstream "127.0.0.1:$up_port" -plain-upstream -exact-balance)
  case $c in
    none) opts+=(-no-extproc) ;;
    null) opts+=(-extproc "127.0.0.1:$null_port") ;;
    tiergate) opts+=(-extproc "127.0.0.1:$tg_port") ;;
    null2) opts+=(-extproc "127.0.0.1:$null2_port") ;;
    contract) opts+=(-extproc "127.0.0.1:$contract_port") ;;
  esac
  go run ./internal/envoyrig/rewrite "${opts[@]}" envoy/envoy.yaml >"$tmp/envoy-$c.json"
  # The access log (stdout) costs every configuration alike; it is dropped.
  "$envoy" -c "$tmp/envoy-$c.json" --disable-hot-restart --concurrency "$envoy_workers" \
    --log-level warn --base-id "$RANDOM$RANDOM" >/dev/null 2>"$tmp/envoy-$c.log" &
  envoy_pid[$c]=$!; started+=("$!")
done
for c in "${configs[@]}"; do wait_port "${listen[$c]}" "${envoy_pid[$c]}"; done
# One request each, so that every connection and cluster is up before the clock runs.
for c in "${configs[@]}"; do
  curl -fsS -o /dev/null -X POST --data-binary @"$tmp/body.json" -H 'content-type: application/json' \
    "http://127.0.0.1:${listen[$c]}/v1/responses" || { echo "bench-envoy: $c does not answer; its log:" >&2; cat "$tmp/envoy-$c.log" >&2; exit 1; }
done
sleep 1
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# The headers Codex sends (tiergate-load's clientHeaders), beyond those h2load sets.
hdrs=(-H 'content-type: application/json'
  -H 'authorization: Bearer sk-proj-tiergateLoadTestKey0123456789abcdefghijklmnopqrstuv'
  -H 'originator: codex_cli_rs' -H 'session_id: 0199a213-81c0-7800-8aa1-bbab2a035a53'
  -H 'user-agent: codex_cli_rs/0.98.0 (Linux 6.8; x86_64) xterm-256color')

ticks=$(getconf CLK_TCK)
cpu_ticks() { if [ -n "$1" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; }
counts() { curl -fsS "http://127.0.0.1:$up_port/counts"; }

# round TOOL CONFIG I runs one round and appends a JSON line to $out/rounds.jsonl.
round() {
  local tool=$1 c=$2 i=$3 before after s0 s1 e0 e1 raw=$out/$1-$2-$3
  before=$(counts); s0=$(cpu_ticks "${server_pid[$c]}"); e0=$(cpu_ticks "${envoy_pid[$c]}")
  local url="http://127.0.0.1:${listen[$c]}/v1/responses"
  if [ "$tool" = h2load ]; then
    h2load -t 1 -c "$clients" -m "$streams" --warm-up-time=1 --duration="$duration" \
      -d "$tmp/body.json" "${hdrs[@]}" --log-file="$raw.log" "$url" >"$raw.txt" &
  else
    wrk -t 1 -c $((clients * streams)) -d "${duration}s" --latency -s "$tmp/post.lua" "$url" >"$raw.txt" &
  fi
  current=$!
  wait "$current" || { echo "bench-envoy: $tool against $c failed:" >&2; cat "$raw.txt" >&2; exit 1; }
  current=""
  after=$(counts); s1=$(cpu_ticks "${server_pid[$c]}"); e1=$(cpu_ticks "${envoy_pid[$c]}")
  local rps p50 p99 failed
  if [ "$tool" = h2load ]; then
    rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$raw.txt")
    failed=$(awk '/^requests:/ {n += $10 + $12 + $14} /^status codes:/ {n += $5 + $7 + $9} END {print n+0}' "$raw.txt")
    read -r p50 p99 < <(cut -f3 "$raw.log" | sort -n | awk '{v[NR]=$1} END {print v[int(NR*0.5)+1], v[int(NR*0.99)+1]}')
  else
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$raw.txt")
    failed=$(awk '/Non-2xx|Socket errors/ {n++} END {print n+0}' "$raw.txt")
    us() { awk -v q="$1" '$1 == q {v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v); m = (u=="ms") ? 1000 : (u=="s") ? 1000000 : 1; print v*m}' "$raw.txt"; }
    p50=$(us 50%); p99=$(us 99%)
  fi
  [ "$failed" = 0 ] || { echo "bench-envoy: $tool against $c: $failed failed or non-2xx requests:" >&2; cat "$raw.txt" >&2; exit 1; }
  jq -cn --arg tool "$tool" --arg c "$c" --argjson i "$i" --argjson rps "$rps" --argjson p50 "$p50" --argjson p99 "$p99" \
    --argjson b "$before" --argjson a "$after" --argjson s "$((s1 - s0))" --argjson e "$((e1 - e0))" --argjson ticks "$ticks" \
    --arg load "$(cut -d' ' -f1 /proc/loadavg)" '
    ($a.requests - $b.requests) as $n | ($a.priority - $b.priority) as $prio |
    {tool: $tool, config: $c, round: $i, rps: $rps, p50_us: $p50, p99_us: $p99, upstream_requests: $n, upstream_priority: $prio,
     server_cpu_us_per_req: (if $n > 0 then $s / $ticks * 1e6 / $n else null end),
     envoy_cpu_us_per_req: (if $n > 0 then $e / $ticks * 1e6 / $n else null end), load1: ($load | tonumber)}' >>"$out/rounds.jsonl"
  # What reached the provider says what the ext_proc server did.
  jq -e --arg c "$c" 'select(.config == $c) | if $c == "tiergate" then .upstream_priority == 0 else .upstream_priority == .upstream_requests end' \
    <(tail -n 1 "$out/rounds.jsonl") >/dev/null ||
    { echo "bench-envoy: $c let the wrong requests through: $(tail -n 1 "$out/rounds.jsonl")" >&2; exit 1; }
}

jqlib='def median: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
       def r(n): . * pow(10; n) | round / pow(10; n);'

report() {
  local tool=$1
  jq -rs --arg tool "$tool" "$jqlib"'
    map(select(.tool == $tool)) as $all |
    def of(c): $all | map(select(.config == c));
    def m(c; f): of(c) | map(f) | median;
    "config     req/s   p50 µs   p99 µs   server CPU µs/req   Envoy CPU µs/req",
    (["none", "null", "tiergate", "null2", "contract"][] as $c |
      "\($c | . + "         " | .[:9]) \(m($c; .rps) | round | tostring | (" " * (7 - length)) + .)  \(m($c; .p50_us) | round | tostring | (" " * (7 - length)) + .)  \(m($c; .p99_us) | round | tostring | (" " * (7 - length)) + .)   \(if $c == "none" then "-" else (m($c; .server_cpu_us_per_req) | r(1)) end)   \(m($c; .envoy_cpu_us_per_req) | r(1))"),
    "",
    "ratios of the medians        tiergate/null   null2/null (the noise)   (goal)",
    "  throughput                 \(m("tiergate"; .rps) / m("null"; .rps) | r(3))           \(m("null2"; .rps) / m("null"; .rps) | r(3))                    (>= 0.9)",
    "  client p50                 \(m("tiergate"; .p50_us) / m("null"; .p50_us) | r(3))           \(m("null2"; .p50_us) / m("null"; .p50_us) | r(3))                    (<= 1.2)",
    "  client p99                 \(m("tiergate"; .p99_us) / m("null"; .p99_us) | r(3))           \(m("null2"; .p99_us) / m("null"; .p99_us) | r(3))                    (<= 1.2)",
    "  ext_proc server CPU/req    \(m("tiergate"; .server_cpu_us_per_req) / m("null"; .server_cpu_us_per_req) | r(3))           \(m("null2"; .server_cpu_us_per_req) / m("null"; .server_cpu_us_per_req) | r(3))",
    "  throughput against none    null \(m("null"; .rps) / m("none"; .rps) | r(3)), tiergate \(m("tiergate"; .rps) / m("none"; .rps) | r(3))",
    "where the gap is: contract/null (the contract'"'"'s cost, any server) and tiergate/contract (tiergate'"'"'s own work)",
    "  throughput                 contract/null \(m("contract"; .rps) / m("null"; .rps) | r(3))   tiergate/contract \(m("tiergate"; .rps) / m("contract"; .rps) | r(3))",
    "  client p50                 contract/null \(m("contract"; .p50_us) / m("null"; .p50_us) | r(3))   tiergate/contract \(m("tiergate"; .p50_us) / m("contract"; .p50_us) | r(3))",
    "  Envoy CPU/req              contract-null \(m("contract"; .envoy_cpu_us_per_req) - m("null"; .envoy_cpu_us_per_req) | r(1)) µs   tiergate-contract \(m("tiergate"; .envoy_cpu_us_per_req) - m("contract"; .envoy_cpu_us_per_req) | r(1)) µs",
    "  server CPU/req             contract-null \(m("contract"; .server_cpu_us_per_req) - m("null"; .server_cpu_us_per_req) | r(1)) µs   tiergate-contract \(m("tiergate"; .server_cpu_us_per_req) - m("contract"; .server_cpu_us_per_req) | r(1)) µs",
    "load average during the rounds: \($all | map(.load1) | min) to \($all | map(.load1) | max)"' "$out/rounds.jsonl"
}

: >"$out/rounds.jsonl"
echo
echo "== h2load: $rounds rounds of ${duration}s (after 1s warm-up) per configuration, $clients connections x $streams streams, 2 KiB body"
printf "%-5s %-9s %8s %8s %8s %10s %10s %6s\n" round config "req/s" "p50 µs" "p99 µs" "srv µs/req" "envoy µs/req" load
for i in $(seq "$rounds"); do
  for k in "${!configs[@]}"; do
    c=${configs[$(((i - 1 + k) % ${#configs[@]}))]}
    round h2load "$c" "$i"
    tail -n 1 "$out/rounds.jsonl" | jq -r '[.round, .config, (.rps|round), .p50_us, .p99_us, (.server_cpu_us_per_req // 0 | . * 10 | round / 10), (.envoy_cpu_us_per_req | . * 10 | round / 10), .load1] | @tsv' |
      awk -F'\t' '{printf "%-5s %-9s %8s %8s %8s %10s %10s %6s\n", $1, $2, $3, $4, $5, $6, $7, $8}'
  done
done
echo
echo "-- h2load, medians of the rounds"
report h2load

if [ "${WRK:-1}" = 1 ]; then
  body=$(jq -Rs . <"$tmp/body.json")
  cat >"$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.body = $body
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer sk-proj-tiergateLoadTestKey0123456789abcdefghijklmnopqrstuv"
wrk.headers["originator"] = "codex_cli_rs"
wrk.headers["session_id"] = "0199a213-81c0-7800-8aa1-bbab2a035a53"
wrk.headers["user-agent"] = "codex_cli_rs/0.98.0 (Linux 6.8; x86_64) xterm-256color"
LUA
  echo
  echo "-- cross-check: wrk (HTTP/1.1), one round of ${duration}s per configuration, $((clients * streams)) connections"
  for c in "${configs[@]}"; do round wrk "$c" 1; done
  report wrk
fi

echo
echo "$(date -u +%Y-%m-%d) on $(nproc) cores, Envoy $("$envoy" --version | sed -n 's/.*version: [0-9a-f]*\/\([0-9.]*\)\/.*/\1/p') with $envoy_workers workers, $(go version | awk '{print $3}'); load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
