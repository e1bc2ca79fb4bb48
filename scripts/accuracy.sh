#!/usr/bin/env bash
# The accuracy table of rate limits across nodes (README "Limits, caching and several nodes"),
# loopback only and bounded: release build, Postgres at KEYWARD_TEST_POSTGRES_URL and Redis at
# 127.0.0.1:6379; 1, 3 and 5 `keyward` processes, offered 100 %, 200 % and 1,000 % of a key's
# limit for ACCURACY_SECS (default 10) seconds each, with Redis and without.
set -euo pipefail
cd "$(dirname "$0")/.."
export KEYWARD_TEST_POSTGRES_URL="${KEYWARD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
export KEYWARD_REQUIRE_POSTGRES=1 KEYWARD_REQUIRE_REDIS=1
cargo test --release --test integration accuracy_table -- --ignored --nocapture 2>&1 \
  | grep -E '^\|'
