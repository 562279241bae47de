#!/usr/bin/env bash
# Measures tiergate's WebSocket bridge against two baselines under the same
# load (issue 4, "Speed and memory"): a direct connection to the fake
# upstream (the limit) and a minimal relay (tiergate-load ws-relay: two
# goroutines copying frames with the same library, no policy, no
# accounting: the floor for any bridge on this machine).
#
# Processes: tiergate (serve, default policy, --usage-log off, --log-level
# warn) and the minimal relay, each on its own; each round's tiergate-load
# ws runs the clients and the fake upstream in one process (the bridge and
# the relay dial it on a fixed port; a process per round, so that nothing of
# one round's load tool is left in the next). One turn is a ~200-byte
# response.create (asking for priority; the default policy filters it)
# answered by response.created, one delta and response.completed with usage.
#
# Order: idle memory first, on fresh servers after a short warm-up (2,000
# sessions, one turn each, held; heap from each server's /metrics, RSS from
# /proc/PID/status), then ROUNDS (default 3) alternating rounds of latency
# (one session, 2,000 sequential turns after 200 of warm-up) and throughput
# (32 sessions back to back, DURATION (10s) after 1s of warm-up) for
# direct, relay and bridge, medians; last, 5,000 concurrent sessions
# through the bridge.
#
# Needs go and jq. Listens on loopback only. OUT=dir keeps each round's
# JSON report; ROUNDS, DURATION, IDLE_SESSIONS and CONCURRENT_SESSIONS change
# the run; TIERGATE_BIN=path measures a tiergate built elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-3}
duration=${DURATION:-10s}
idle_sessions=${IDLE_SESSIONS:-2000}
concurrent_sessions=${CONCURRENT_SESSIONS:-5000}
command -v jq >/dev/null || { echo "bench-ws: needs jq" >&2; exit 1; }

. "$(dirname "$0")/bench-lib.sh"
bench_setup

free_port up_port; free_port relay_port; free_port relay_admin; free_port tg_ws; free_port tg_extproc; free_port tg_admin
"$tmp/tiergate" serve --usage-log off --log-level warn \
  --ws-listen "127.0.0.1:$tg_ws" --ws-upstream "ws://127.0.0.1:$up_port" \
  --extproc-listen "127.0.0.1:$tg_extproc" --admin-listen "127.0.0.1:$tg_admin" 2>"$tmp/tiergate.log" &
tg_pid=$!; started+=("$tg_pid")
"$tmp/tiergate-load" ws-relay --listen "127.0.0.1:$relay_port" --upstream "ws://127.0.0.1:$up_port" \
  --admin-listen "127.0.0.1:$relay_admin" 2>"$tmp/relay.log" &
relay_pid=$!; started+=("$relay_pid")
wait_port "$tg_ws" "$tg_pid"; wait_port "$tg_admin" "$tg_pid"
wait_port "$relay_port" "$relay_pid"; wait_port "$relay_admin" "$relay_pid"

# 5,000 sessions are 10,000 descriptors in the bridge (client and upstream
# ends): say what tiergate may open (Go raises the soft limit to the hard one
# at startup).
tg_nofile=$(awk '/^Max open files/ {print $4 " (soft) / " $5 " (hard)"}' "/proc/$tg_pid/limits")
echo "tiergate may open $tg_nofile files; this shell's hard limit is $(ulimit -Hn)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# round NAME FILE ARGS... runs one round against direct, relay or bridge and
# keeps its JSON report in FILE.
round() {
  local name=$1 file=$2; shift 2
  local target=()
  case $name in
    direct) target=() ;;
    relay) target=(--target "ws://127.0.0.1:$relay_port/v1/responses" --admin "http://127.0.0.1:$relay_admin" --pid "$relay_pid") ;;
    bridge) target=(--target "ws://127.0.0.1:$tg_ws/v1/responses" --admin "http://127.0.0.1:$tg_admin" --pid "$tg_pid") ;;
  esac
  # In the background, so that a signal to this script is acted on at once.
  "$tmp/tiergate-load" ws --upstream-listen "127.0.0.1:$up_port" "${target[@]}" --json "$@" >"$file" 2>>"$tmp/load.log" &
  current=$!
  if ! wait "$current"; then
    echo "bench-ws: $name round failed:" >&2
    jq -r '"errors: \(.errors)", (.error_examples // {} | to_entries[] | "  \(.key): \(.value)")' "$file" >&2 || cat "$file" "$tmp/load.log" >&2
    exit 1
  fi
  current=""
}

jqlib='def median: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
       def r(n): . * pow(10; n) | round / pow(10; n);
       def kib: . / 1024 | r(1);
       def verdict(ok): if ok then "met" else "MISSED" end;'

# Warm-up: the first sessions through a fresh server pay for lazy set-up
# (pools, the watchdog, code paths faulted in); not what a session costs.
for t in relay bridge; do round "$t" "$out/warmup-$t.json" --mode latency --turns 200 --warmup-turns 0; done
sleep 1

echo
echo "== idle memory: $idle_sessions sessions, one turn each, held; target's memory after less before, per session"
for t in relay bridge; do
  round "$t" "$out/idle-$t.json" --mode idle --sessions "$idle_sessions" --settle 3s
  jq -r --arg t "$t" "$jqlib"'.memory as $m |
    "\($t): heap \($m.heap_per_session_bytes|kib) KiB  stacks \($m.stack_per_session_bytes|kib) KiB  heap+stacks \($m.heap_stack_per_session_bytes|kib) KiB  RSS \($m.rss_per_session_bytes|kib) KiB   (RSS \($m.before.rss_bytes/1048576|r(1)) -> \($m.after.rss_bytes/1048576|r(1)) MiB, \(.held) held, errors \(.errors))"' "$out/idle-$t.json"
  sleep 2 # let the closes finish before the next round
done

echo
echo "== $rounds alternating rounds: latency (1 session, 2,000 turns after 200) and throughput (32 sessions, $duration after 1s)"
cols="%-5s %-7s %9s %9s %9s %11s %12s %10s\n"
printf "$cols" round target "p50 µs" "p90 µs" "p99 µs" "turns/s" "target µs/t" "others"
for i in $(seq "$rounds"); do
  for t in direct relay bridge; do
    round "$t" "$out/latency-$t-$i.json" --mode latency --turns 2000 --warmup-turns 200
    round "$t" "$out/throughput-$t-$i.json" --mode throughput --sessions 32 --warmup 1s --duration "$duration"
    jq -rn --slurpfile l "$out/latency-$t-$i.json" --slurpfile p "$out/throughput-$t-$i.json" "$jqlib"'
      $l[0] as $l | $p[0] as $p |
      [($l.latency_us.p50|r(1)), ($l.latency_us.p90|r(1)), ($l.latency_us.p99|r(1)), ($p.turns_per_second|round),
       ($p.cpu.target_us_per_turn // "-" | if type == "number" then r(1) else . end), ($p.cpu.other_cores|r(2))] | @tsv' |
      awk -v i="$i" -v t="$t" -F'\t' -v cols="$cols" '{printf cols, i, t, $1, $2, $3, $4, $5, $6}'
  done
done
echo "(latency: client time per turn, one session; turns/s: 32 sessions; target µs/t: the relay's or tiergate's CPU per turn;"
echo " others: cores the rest of the machine kept busy during the throughput round)"

echo
echo "== concurrent: $concurrent_sessions sessions through the bridge, all open at once, one turn each"
round bridge "$out/concurrent-bridge.json" --mode concurrent --sessions "$concurrent_sessions" --settle 1s --timeout 30s
jq -r "$jqlib"'"bridge: \(.held) held, opened with one turn each in \(.open_seconds|r(2)) s, \(.turns) turns (a second one on each after holding), errors \(.errors)   (tiergate RSS \(.memory.before.rss_bytes/1048576|r(1)) -> \(.peak_rss_bytes/1048576|r(1)) MiB)"' "$out/concurrent-bridge.json"

jq -rn --slurpfile lat <(cat "$out"/latency-*.json) --slurpfile tp <(cat "$out"/throughput-*.json) \
  --slurpfile ir "$out/idle-relay.json" --slurpfile ib "$out/idle-bridge.json" --slurpfile cc "$out/concurrent-bridge.json" "$jqlib"'
  def med(set; port; f): [set[] | select(.target | contains(":" + port + "/")) | f] | median;
  ($lat | med(.; "'"$up_port"'"; .latency_us.p50)) as $dl | ($lat | med(.; "'"$relay_port"'"; .latency_us.p50)) as $rl | ($lat | med(.; "'"$tg_ws"'"; .latency_us.p50)) as $bl |
  ($tp | med(.; "'"$up_port"'"; .turns_per_second)) as $dt | ($tp | med(.; "'"$relay_port"'"; .turns_per_second)) as $rt | ($tp | med(.; "'"$tg_ws"'"; .turns_per_second)) as $bt |
  ($tp | med(.; "'"$relay_port"'"; .cpu.target_us_per_turn)) as $rc | ($tp | med(.; "'"$tg_ws"'"; .cpu.target_us_per_turn)) as $bc |
  ($ir[0].memory.rss_per_session_bytes) as $rr | ($ib[0].memory.rss_per_session_bytes) as $br |
  ($ir[0].memory.heap_stack_per_session_bytes) as $rh | ($ib[0].memory.heap_stack_per_session_bytes) as $bh |
  "",
  "median turns/s (32 sessions)   direct \($dt|round)   relay \($rt|round)   bridge \($bt|round)",
  "throughput bridge/relay        \($bt/$rt|r(3))   (target >= 0.85: \(verdict($bt/$rt >= 0.85)))   bridge/direct \($bt/$dt|r(3))   relay/direct \($rt/$dt|r(3))",
  "CPU per turn                   relay \($rc|r(1)) µs   bridge \($bc|r(1)) µs   (+\($bc-$rc|r(1)) µs)",
  "median p50 per turn            direct \($dl|r(1)) µs   relay \($rl|r(1)) µs   bridge \($bl|r(1)) µs",
  "p50 bridge - relay             \($bl-$rl|r(1)) µs   (target <= 30: \(verdict($bl-$rl <= 30)))   bridge - direct \($bl-$dl|r(1)) µs   relay - direct \($rl-$dl|r(1)) µs",
  "idle RSS per session           relay \($rr|kib) KiB   bridge \($br|kib) KiB   bridge - relay \($br-$rr|kib) KiB   (target <= 16: \(verdict($br-$rr <= 16384)))",
  "idle heap+stacks per session   relay \($rh|kib) KiB   bridge \($bh|kib) KiB   bridge - relay \($bh-$rh|kib) KiB   (direct: no server process, 0 by definition)",
  "\($cc[0].sessions) concurrent through the bridge  \($cc[0].held) held, errors \($cc[0].errors)   (target no errors: \(verdict($cc[0].errors == 0 and $cc[0].held == $cc[0].sessions)))"'

echo
echo "$(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(go version | awk '{print $3}'); load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
