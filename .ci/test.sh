#!/usr/bin/env bash
# Formatting, clippy with warnings denied, and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
# CI machines run x86-64 Linux with glibc 2.35+ and a 5.10+ kernel, so restartable sequences
# must work there: with this set, the tests that exercise them fail when they are unusable,
# instead of skipping with a note (which is what they do on a developer's machine without it).
export SHEAF_REQUIRE_RSEQ="${SHEAF_REQUIRE_RSEQ:-1}"
cargo xtask test
