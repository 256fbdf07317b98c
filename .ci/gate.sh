#!/usr/bin/env bash
# The regression gate against results/reference/. Installs gungraun-runner 0.20.0 itself when
# it is missing (about 1.5 minutes); needs valgrind. Exit status 1: a regression.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo xtask gate "$@"
