#!/usr/bin/env bash
# loom models of object-alloc's deferred-callback queue and of sheaf's CPU-slot try-lock, its
# deferred-free lock (a barrier past a held slot), barn, orphan adoption, the barrier's reservation protocol, deferred frees by restartable
# sequences, the stamped chain of deferred-free sheaves and its marks (a couple of minutes). `--cfg loom` rebuilds every dependency, so it gets a target
# directory of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom"
cargo test -p object-alloc --release --lib loom "$@"
cargo test -p sheaf --release loom "$@"
