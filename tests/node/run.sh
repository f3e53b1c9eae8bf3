#!/bin/sh
# ctest entry for the openai-npm tests: install the locked client if needed, run one
# (test_openai.mjs, or the file named by $1).
set -e
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "FAIL: node and npm are needed for this test (Node.js >= 18; CI installs them)" >&2
    exit 1
fi
if [ ! -d node_modules/openai ] || [ ! -d node_modules/zod ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
exec node "${1:-test_openai.mjs}"
