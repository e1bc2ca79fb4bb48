#!/usr/bin/env bash
# Load run, loopback only and bounded: two Keyward servers (release build, SQLite), one
# with rate limits shared through Redis (KEYWARD_REDIS_URL, 127.0.0.1:6379) and one
# without. Against each, in interleaved rounds, wrk -t1 -c32 -d${DURATION:-5}s measures
#   GET /v1/ping (trivial JSON)   GET /v1/auth (forward-auth)   POST /v1/keys/verify
# with a valid, cached key that has a rate limit far from being reached, and prints the
# median requests/s, p99 and server CPU time per request of each door over ${ROUNDS:-3}
# rounds, and each door's share of the same server's trivial endpoint (the median of its
# per-round shares).
#
# PIN=1 keeps the load generator off the server's cores: the servers run on the first half
# of the cores (`taskset`, with as many tokio workers as cores), wrk on the other half.
# Without it (the default) wrk, Redis and the server share every core, and a request also
# waits whenever the scheduler slices a core between them: that shows in the p99.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"
PORT="${PORT:-18080}"
PIN="${PIN:-0}"

server_pin=() wrk_pin=() server_workers=""
if [ "$PIN" = 1 ]; then
  cores=$(nproc)
  [ "$cores" -ge 2 ] || { echo "PIN=1 needs at least 2 cores" >&2; exit 1; }
  command -v taskset >/dev/null 2>&1 || { echo "PIN=1 needs taskset (util-linux)" >&2; exit 1; }
  half=$((cores / 2))
  server_pin=(taskset -c "0-$((half - 1))") wrk_pin=(taskset -c "$half-$((cores - 1))")
  server_workers=$half
fi

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "wrk is needed: apt-get install -y wrk" >&2; exit 1
  fi
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "Redis must answer on 127.0.0.1:6379" >&2; exit 1; }
cargo build --release --quiet

dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT

# start NAME PORT [REDIS_URL]: a server on its own SQLite file.
start() {
  mkdir -p "$dir/$1"
  KEYWARD_BIND="127.0.0.1:$2" DATABASE_URL="sqlite://$dir/$1/kw.db" KEYWARD_SECRETS_FILE="$dir/$1/secrets" \
    KEYWARD_VERIFIER_TOKENS=load-test-token KEYWARD_REDIS_URL="${3:-}" \
    KEYWARD_REDIS_PREFIX="kwload:$$:" RUST_LOG=warn \
    env ${server_workers:+TOKIO_WORKER_THREADS=$server_workers} "${server_pin[@]}" ./target/release/keyward >"$dir/$1/server.log" 2>&1 &
  pids+=($!)
  pid[$1]=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && return; sleep 0.1; done
  echo "server $1 did not start" >&2; cat "$dir/$1/server.log" >&2; exit 1
}

# new_key BASE: signs up through the dashboard's own forms and prints a new key's secret
# (rate limit 1,000,000/second: far from its limit, but checked on every request).
field() { grep -o "name=\"$1\" value=\"[^\"]*\"" | head -1 | sed 's/.*value="//; s/"$//'; }
new_key() {
  local base=$1 jar csrf form
  jar=$(mktemp -p "$dir")
  csrf=$(curl -s -c "$jar" -b "$jar" "$base/signup" | field csrf)
  curl -s -c "$jar" -b "$jar" -o /dev/null --data-urlencode "csrf=$csrf" \
    --data-urlencode "email=load@example.com" --data-urlencode "password=load test pass phrase 42" "$base/signup"
  csrf=$(curl -s -c "$jar" -b "$jar" "$base/login" | field csrf)
  curl -s -c "$jar" -b "$jar" -o /dev/null --data-urlencode "csrf=$csrf" \
    --data-urlencode "email=load@example.com" --data-urlencode "password=load test pass phrase 42" "$base/login"
  form=$(curl -s -c "$jar" -b "$jar" "$base/settings/api-keys/new")
  curl -s -c "$jar" -b "$jar" \
    --data-urlencode "csrf=$(echo "$form" | field csrf)" --data-urlencode "org=$(echo "$form" | field org)" \
    --data-urlencode "form_token=$(echo "$form" | field form_token)" --data-urlencode "name=load" \
    --data-urlencode "environment=live" --data-urlencode "preset=Read-only" --data-urlencode "expiry=30d" \
    --data-urlencode "rate_limit=1000000" --data-urlencode "rate_window=second" \
    "$base/settings/api-keys" | grep -o 'id="new-key">[^<]*' | sed 's/.*>//'
}

declare -A base key pid
start redis "$PORT" "redis://127.0.0.1:6379"; base[redis]="http://127.0.0.1:$PORT"
start local "$((PORT + 1))"; base[local]="http://127.0.0.1:$((PORT + 1))"
for s in redis local; do
  key[$s]=$(new_key "${base[$s]}")
  [ -n "${key[$s]}" ] || { echo "could not create a key on the $s server" >&2; exit 1; }
  curl -sf -X POST -H "Authorization: Bearer load-test-token" -H "Content-Type: application/json" \
    -d "{\"key\":\"${key[$s]}\"}" "${base[$s]}/v1/keys/verify" | grep -q '"code":"VALID"' \
    || { echo "the $s key does not verify" >&2; exit 1; }
  cat >"$dir/verify-$s.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"key":"${key[$s]}","scopes":["read"]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer load-test-token"
LUA
done

# run SERVER DOOR: one wrk run; appends "rps p99_ms server_cpu_us_per_request" to
# $dir/SERVER-DOOR (the server's own CPU: Redis's part of a shared limit is not in it).
ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.2f", v }'; }
# cpu PID: the process's user + system CPU time so far, in clock ticks.
# (Fields counted after the command name, which could hold a space.)
cpu() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
run() {
  local s=$1 door=$2 out t0
  t0=$(cpu "${pid[$s]}")
  case $door in
    ping) out=$("${wrk_pin[@]}" wrk -t1 -c32 -d"${DURATION}s" --latency "${base[$s]}/v1/ping" 2>&1) ;;
    auth) out=$("${wrk_pin[@]}" wrk -t1 -c32 -d"${DURATION}s" --latency -H "Authorization: Bearer ${key[$s]}" "${base[$s]}/v1/auth" 2>&1) ;;
    verify) out=$("${wrk_pin[@]}" wrk -t1 -c32 -d"${DURATION}s" --latency -s "$dir/verify-$s.lua" "${base[$s]}/v1/keys/verify" 2>&1) ;;
  esac
  if echo "$out" | grep -q "Non-2xx"; then echo "$s $door: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
  # The server's CPU time per request (µs): what the door costs the server, whatever wrk
  # took of the shared cores.
  local us
  us=$(awk -v t0="$t0" -v t1="$(cpu "${pid[$s]}")" -v hz="$(getconf CLK_TCK)" -v n="$(echo "$out" | awk '/requests in/ {print $1}')" \
    'BEGIN { if (n > 0) printf "%.1f", (t1 - t0) / hz * 1e6 / n; else printf "0" }')
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1=="99%" {print $2}' | ms) $us" >>"$dir/$s-$door"
}
median() { sort -n | awk '{ a[NR]=$1 } END { if (NR % 2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

echo "warming up…"
for s in redis local; do
  "${wrk_pin[@]}" wrk -t1 -c32 -d2s -s "$dir/verify-$s.lua" "${base[$s]}/v1/keys/verify" >/dev/null 2>&1
  "${wrk_pin[@]}" wrk -t1 -c32 -d2s -H "Authorization: Bearer ${key[$s]}" "${base[$s]}/v1/auth" >/dev/null 2>&1
done
# The machine's speed drifts over seconds (shared cores, a VM's neighbours): each door is
# compared with the ping run of its own round, and the order of the doors alternates from
# round to round (evenly with an even ROUNDS; with an odd one ping goes first once more).
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS…"
  order=$([ $((r % 2)) = 1 ] && echo "ping auth verify" || echo "verify auth ping")
  for s in redis local; do for door in $order; do run "$s" "$door"; done; done
done

echo
placement=$([ "$PIN" = 1 ] && echo "server pinned to cores ${server_pin[2]} with $server_workers tokio worker(s), wrk to ${wrk_pin[2]}" \
  || echo "wrk, Redis and the server sharing them")
echo "wrk -t1 -c32 -d${DURATION}s, $(nproc) cores ($placement), SQLite, medians of $ROUNDS interleaved rounds:"
for s in redis local; do
  label=$([ "$s" = redis ] && echo "Redis shared limits on" || echo "Redis off (per-node limits)")
  echo "  $label:"
  for door in ping auth verify; do
    rps=$(cut -d' ' -f1 "$dir/$s-$door" | median)
    p99=$(cut -d' ' -f2 "$dir/$s-$door" | median)
    cpu_us=$(cut -d' ' -f3 "$dir/$s-$door" | median)
    name=$(case $door in ping) echo "GET /v1/ping (trivial JSON)";; auth) echo "GET /v1/auth (forward-auth)";; verify) echo "POST /v1/keys/verify";; esac)
    # Share of ping: the median over rounds of this door's rate over its round's ping rate
    # (and the lowest and highest of those).
    ratios=$(paste -d' ' <(cut -d' ' -f1 "$dir/$s-$door") <(cut -d' ' -f1 "$dir/$s-ping") \
      | awk '{ printf "%.4f\n", ($2 > 0 ? $1 / $2 : 0) }' | sort -n)
    share=$(echo "$ratios" | median | awk '{ printf "%.0f%%", 100 * $1 }')
    range=$(echo "$ratios" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f–%.0f%%", 100 * lo, 100 * hi }')
    printf '    %-30s %10s req/s  p99 %5s ms  %5s of ping (rounds %s)  server CPU %5s µs/req\n' \
      "$name" "$rps" "$p99" "$share" "$range" "$cpu_us"
  done
done
