#!/usr/bin/env bash
# The contract clauses on every allocator; the report goes to results/runs/<time>/conformance.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo xtask conformance "$@"
