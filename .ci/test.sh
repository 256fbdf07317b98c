#!/usr/bin/env bash
# Formatting, clippy with warnings denied, and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo xtask test
