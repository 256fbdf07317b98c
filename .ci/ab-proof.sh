#!/usr/bin/env bash
# Does `sheafbench ab` earn its verdicts on this machine? Two tallies:
#  - A/A: the plain build against itself; every "faster" or "slower" is a false verdict
#    (the bar: at most 5% of rows);
#  - detection: the plain build (old) against a build slowed by INSTRUCTIONS extra
#    instructions per sheaf alloc+free pair (feature sheaf/slowdown, new); of the rows the
#    slowdown touches, how many are called "slower" (the bar: at least 9 in 10). Touched: a
#    sheaf row whose median change over the detection invocations is -10% or beyond. The
#    other allocators' rows (the build does not change them) count like A/A rows.
#   .ci/ab-proof.sh [ROUNDS] [REPEATS] [INSTRUCTIONS]
#   .ci/ab-proof.sh --tally DIR     (the tallies again, from DIR's files)
# Each `ab` invocation runs the suite in ROUNDS interleaved rounds (default 20); there
# are REPEATS A/A invocations and REPEATS detection ones (default 3), alternating.
# INSTRUCTIONS defaults to 16 (8 and 12 moved nothing measurable on the AMD VM). Files:
# results/runs/ab-proof-<time>/, the tallies in its summary.txt. The suite and the builds
# are those of .ci/compare-proof.sh (.ci/proof-builds.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/proof-builds.sh

measure_all() {
    build_both
    ab() { # ab <new binary> <name>
        "$plain" ab --old "$plain" --new "$1" "${suite[@]}" --runs "$rounds" --json "$logs/$2.json" \
            --verdicts "$logs/$2-verdicts.json" >"$logs/$2.log" 2>&1 \
            || { echo "ab $2 failed: see $logs/$2.log"; exit 2; }
    }
    for i in $(seq 1 "$repeats"); do
        ab "$plain" "aa$i"
        ab "$slowed" "slowed$i"
        echo "repeat $i/$repeats done"
    done
}

rows() { # rows <prefix>: one line per verdict row: row, change, verdict
    for file in "$logs"/"$1"[0-9]*-verdicts.json; do
        jq -r '.rows[] | ["\(.workload)/\(.allocator)/\(.threads)t/\(.figure)",
            (.change // 0), .verdict] | @tsv' "$file"
    done
}

tally() {
    echo "ab proof: $repeats A/A and $repeats detection invocations of $rounds rounds each, slowdown $instructions instructions per pair"
    rows aa | awk -F'\t' '{ n++; if ($3 == "faster" || $3 == "slower") v++ }
        END { printf "  A/A: %d of %d rows called faster or slower (%.1f%%)\n", v, n, n ? 100 * v / n : 0 }'
    rows slowed | awk -F'\t' '
        { k = $1; n[k]++; c[k, n[k]] = $2; v[k, n[k]] = $3 }
        END {
            for (k in n) {
                m = n[k]; for (i = 1; i <= m; i++) s[i] = c[k, i]
                for (i = 2; i <= m; i++) { x = s[i]; j = i - 1; while (j > 0 && s[j] > x) { s[j + 1] = s[j]; j-- } s[j + 1] = x }
                med = (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
                split(k, f, "/")
                if (f[2] == "sheaf") {
                    calls = ""
                    for (i = 1; i <= m; i++) { calls = calls " " v[k, i]; if (v[k, i] == "slower") slower++ }
                    if (med <= -0.10) {
                        rows++
                        for (i = 1; i <= m; i++) { touched++; if (v[k, i] == "slower") hit++ }
                        list = list sprintf("\n    %s: median %+.1f%%:%s", k, 100 * med, calls)
                    } else {
                        less = less sprintf("\n    %s: median %+.1f%%:%s", k, 100 * med, calls)
                    }
                } else {
                    for (i = 1; i <= m; i++) { other++; if (v[k, i] == "faster" || v[k, i] == "slower") wrong++ }
                }
            }
            printf "  detection: %d of %d invocations of touched rows called slower (%.1f%%); %d rows touched by 10%% or more:%s\n", hit, touched, touched ? 100 * hit / touched : 0, rows, list
            printf "  sheaf rows touched by less than 10%%:%s\n", less
            printf "  the other allocators'"'"' rows in those invocations: %d of %d called faster or slower\n", wrong, other
        }'
}

if [ "${1:-}" = --tally ]; then
    logs=${2:?usage: .ci/ab-proof.sh --tally DIR}
    read -r rounds repeats instructions <"$logs/settings"
else
    rounds=${1:-20}
    repeats=${2:-3}
    instructions=${3:-16}
    logs="results/runs/ab-proof-$(date -u +%Y-%m-%dT%H-%M-%SZ)"
    mkdir -p "$logs"
    echo "$rounds $repeats $instructions" >"$logs/settings"
    measure_all
fi
tally | tee "$logs/summary.txt"
