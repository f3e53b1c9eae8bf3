#!/usr/bin/env bash
# Set up kvserve on a fresh Debian 12 machine and generate a story with the
# 260K-parameter TinyStories model from ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
./build/kvserve generate -m ../shared/models/stories260K.gguf -p "Once upon a time" -n 200 \
  --temperature 0.8 --seed 42 --device-memory 2GiB -v
