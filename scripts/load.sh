#!/usr/bin/env bash
# Load run, loopback only: on one Keyward server (release build, SQLite), compares
#   POST /v1/keys/verify with a valid, cached key   against   GET /v1/ping (trivial JSON)
# with wrk -t1 -c32 -d${DURATION:-10}s, and prints requests/s, p50/p99 and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
PORT="${PORT:-18080}"

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "wrk is needed: apt-get install -y wrk" >&2; exit 1
  fi
fi
cargo build --release --quiet

dir=$(mktemp -d)
KEYWARD_BIND="127.0.0.1:$PORT" DATABASE_URL="sqlite://$dir/kw.db" KEYWARD_SECRETS_FILE="$dir/secrets" \
  KEYWARD_VERIFIER_TOKENS=load-test-token RUST_LOG=warn ./target/release/keyward >"$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
base="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done

# Sign up and create a key through the dashboard's own forms.
jar="$dir/jar"
field() { grep -o "name=\"$1\" value=\"[^\"]*\"" | head -1 | sed 's/.*value="//; s/"$//'; }
csrf=$(curl -s -c "$jar" -b "$jar" "$base/signup" | field csrf)
curl -s -c "$jar" -b "$jar" -o /dev/null --data-urlencode "csrf=$csrf" \
  --data-urlencode "email=load@example.com" --data-urlencode "password=load test pass phrase 42" "$base/signup"
# Sign-up answers "check your inbox"; the new (still unconfirmed) account then signs in.
csrf=$(curl -s -c "$jar" -b "$jar" "$base/login" | field csrf)
curl -s -c "$jar" -b "$jar" -o /dev/null --data-urlencode "csrf=$csrf" \
  --data-urlencode "email=load@example.com" --data-urlencode "password=load test pass phrase 42" "$base/login"
form=$(curl -s -c "$jar" -b "$jar" "$base/settings/api-keys/new")
key=$(curl -s -c "$jar" -b "$jar" \
  --data-urlencode "csrf=$(echo "$form" | field csrf)" --data-urlencode "org=$(echo "$form" | field org)" \
  --data-urlencode "form_token=$(echo "$form" | field form_token)" --data-urlencode "name=load" \
  --data-urlencode "environment=live" --data-urlencode "preset=Read-only" --data-urlencode "expiry=30d" \
  "$base/settings/api-keys" | grep -o 'id="new-key">[^<]*' | sed 's/.*>//')
[ -n "$key" ] || { echo "could not create a key" >&2; exit 1; }

cat >"$dir/verify.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"key":"$key","scopes":["read"]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer load-test-token"
LUA
curl -sf -X POST -H "Authorization: Bearer load-test-token" -H "Content-Type: application/json" \
  -d "{\"key\":\"$key\"}" "$base/v1/keys/verify" | grep -q '"code":"VALID"' || { echo "key does not verify" >&2; exit 1; }

run() { wrk -t1 -c32 -d"${DURATION}s" --latency "$@" 2>&1; }
summary() {
  local out="$1"
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  echo "$rps $p50 $p99"
}
echo "warming up…"; wrk -t1 -c32 -d2s -s "$dir/verify.lua" "$base/v1/keys/verify" >/dev/null 2>&1
read -r ping_rps ping_p50 ping_p99 <<<"$(summary "$(run "$base/v1/ping")")"
read -r ver_rps ver_p50 ver_p99 <<<"$(summary "$(run -s "$dir/verify.lua" "$base/v1/keys/verify")")"
ratio=$(awk -v a="$ver_rps" -v b="$ping_rps" 'BEGIN { printf "%.0f%%", 100 * a / b }')
echo
echo "wrk -t1 -c32 -d${DURATION}s, $(nproc) cores, SQLite, one server:"
printf '  %-34s %10s req/s  p50 %-8s p99 %s\n' "GET /v1/ping (trivial JSON)" "$ping_rps" "$ping_p50" "$ping_p99"
printf '  %-34s %10s req/s  p50 %-8s p99 %s\n' "POST /v1/keys/verify (cached key)" "$ver_rps" "$ver_p50" "$ver_p99"
echo "  verify / trivial = $ratio"
