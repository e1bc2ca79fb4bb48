#!/usr/bin/env bash
# Runs every test: formatting and lints, unit tests, the integration suite on SQLite
# and on Postgres, schemathesis, and the browser journeys (Chromium). Postgres tests use KEYWARD_TEST_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/test); they are skipped with a notice when it does not
# answer, unless KEYWARD_REQUIRE_POSTGRES=1 (CI sets it), which makes them fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

export KEYWARD_TEST_POSTGRES_URL="${KEYWARD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

# The forward-auth test runs a real nginx (Debian package); install it when we can.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing nginx (for the forward-auth test)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
  else
    echo "NOTE: nginx is not installed; the nginx forward-auth test will be skipped (apt-get install -y nginx)"
  fi
fi

# The several-nodes tests share rate limits through Redis at 127.0.0.1:6379 (and start
# redis-servers of their own to kill); start one that keeps nothing on disk when it is
# installed but not running.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1; then
  echo "==> starting redis-server on 127.0.0.1:6379 (nothing kept on disk)"
  redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

# The SSO tests run a real OpenID Provider (panva's oidc-provider, tests/idp) on Node 20+.
if ! command -v node >/dev/null 2>&1; then
  echo "FATAL: Node.js (20 or later) is needed for the SSO tests' identity provider" >&2
  exit 1
fi
if [ ! -d tests/idp/node_modules/oidc-provider ]; then
  echo "==> npm ci (tests/idp: the test identity provider)"
  (cd tests/idp && npm ci --no-audit --no-fund --loglevel=error)
fi

# The management API is fuzzed with schemathesis (PyPI) against its OpenAPI document.
if ! command -v schemathesis >/dev/null 2>&1; then
  echo "==> pip install schemathesis"
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==4.32.5" \
    || echo "NOTE: could not install schemathesis; its test will be skipped (unless required)"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "==> cargo test (SQLite and Postgres at ${KEYWARD_TEST_POSTGRES_URL%%@*}@…)"
cargo test --locked

# The dashboard end to end in Debian's Chromium (playwright-core; never a downloaded browser).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium (for the browser tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  fi
fi
if [ -x /usr/bin/chromium ]; then
  if [ ! -d tests/e2e/node_modules/playwright-core ]; then
    echo "==> npm ci (tests/e2e: playwright-core)"
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
  fi
  echo "==> browser journeys (tests/e2e, Chromium)"
  cargo build --locked --bin keyward
  (cd tests/e2e && npm test)
elif [ "${KEYWARD_REQUIRE_BROWSER:-}" = 1 ]; then
  echo "FATAL: /usr/bin/chromium is required for the browser tests (apt-get install -y chromium)" >&2
  exit 1
else
  echo "NOTE: Chromium is not installed; the browser journeys were skipped (apt-get install -y chromium)"
fi

