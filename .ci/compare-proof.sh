#!/usr/bin/env bash
# Does `sheafbench compare` earn its verdicts on this machine? Two tallies:
#  - A/A: two runs of one build compared; every "faster" or "slower" is a false verdict
#    (the bar: at most 5% of rows);
#  - detection: a run of a build slowed by INSTRUCTIONS extra instructions per sheaf
#    alloc+free pair (feature sheaf/slowdown) against a run of the plain build; of the rows
#    the slowdown touches, how many get the verdict of that direction (the bar: at least 9
#    in 10). Touched: a row of sheaf, or a paired ratio with sheaf on either side, whose
#    median change over the detection pairs is 10% or more. Every other row (the other
#    allocators' own figures, which the build does not change) counts like an A/A row.
#   .ci/compare-proof.sh [ROUNDS] [CALIBRATION] [INSTRUCTIONS]
#   .ci/compare-proof.sh --tally DIR     (the comparisons and tallies again, from DIR's files)
# Each of ROUNDS rounds (default 6) runs the suite below with the plain build (a<i>) and the
# slowed one (s<i>), in alternating order; the first CALIBRATION rounds (default 6) run the
# plain build once more (c<i>), the files `--calibrate` gets. A/A pairs are a<i> and a<i+1>;
# detection pairs a<i> and s<i>. Every pair is compared twice: with thresholds from the
# rounds alone, and calibrated. INSTRUCTIONS defaults to 20. Files:
# results/runs/compare-proof-<time>/, the tallies in its summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/proof-builds.sh

measure_all() {
    suite+=(--runs 5 --no-history)
    build_both
    measure() { # measure <binary> <name>
        "$1" run "${suite[@]}" --json "$logs/$2.json" >"$logs/$2.log" 2>&1 \
            || { echo "run $2 failed: see $logs/$2.log"; exit 2; }
    }
    for i in $(seq 1 "$rounds"); do
        if [ $((i % 2)) -eq 1 ]; then
            measure "$plain" "a$i"; measure "$slowed" "s$i"
        else
            measure "$slowed" "s$i"; measure "$plain" "a$i"
        fi
        if [ "$i" -le "$calibration" ]; then measure "$plain" "c$i"; fi
        echo "round $i/$rounds done"
    done
}

compare_all() {
    local cal_args=(--calibrate)
    for i in $(seq 1 "$calibration"); do cal_args+=("$logs/c$i.json"); done
    compare() { # compare <old> <new> <out> <rounds|calibrated>
        local extra=()
        if [ "$4" = calibrated ]; then extra=("${cal_args[@]}"); fi
        "$plain" compare "$logs/$1.json" "$logs/$2.json" --json "$logs/$3.json" "${extra[@]}" \
            >"$logs/$3.txt" 2>&1 || { echo "compare $1 $2 failed: see $logs/$3.txt"; exit 2; }
        # One line per row: mode, row, change, verdict.
        jq -r --arg mode "$4" '.rows[] | [$mode,
            "\(.workload)/\(.allocator)/\(.threads)t/\(.figure)", (.change // 0), .verdict]
            | @tsv' "$logs/$3.json"
    }
    : >"$logs/aa.tsv"; : >"$logs/slowed.tsv"
    for mode in rounds calibrated; do
        for i in $(seq 1 $((rounds - 1))); do
            compare "a$i" "a$((i + 1))" "aa-$mode-$i" "$mode" >>"$logs/aa.tsv"
        done
        for i in $(seq 1 "$rounds"); do
            compare "a$i" "s$i" "slowed-$mode-$i" "$mode" >>"$logs/slowed.tsv"
        done
    done
}

tally() {
    echo "compare proof: $rounds rounds, $calibration calibration files, slowdown $instructions instructions per pair"
    for mode in rounds calibrated; do
        awk -F'\t' -v mode="$mode" '$1 == mode { n++; if ($4 == "faster" || $4 == "slower") v++ }
            END { printf "  A/A (%s): %d of %d rows called faster or slower (%.1f%%)\n", mode, v, n, n ? 100 * v / n : 0 }' \
            "$logs/aa.tsv"
        awk -F'\t' -v mode="$mode" '
            $1 == mode { k = $2; n[k]++; c[k, n[k]] = $3; v[k, n[k]] = $4 }
            END {
                for (k in n) {
                    m = n[k]; for (i = 1; i <= m; i++) s[i] = c[k, i]
                    for (i = 2; i <= m; i++) { x = s[i]; j = i - 1; while (j > 0 && s[j] > x) { s[j + 1] = s[j]; j-- } s[j + 1] = x }
                    med = (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
                    split(k, f, "/")
                    sheaf = (f[2] == "sheaf" || f[4] == "vs sheaf")
                    # A latency row that rose, or any other that fell, should be called slower.
                    latency = (f[4] ~ /^p[0-9.]+$/)
                    if (sheaf && (med <= -0.10 || med >= 0.10)) {
                        want = ((med < 0) != latency) ? "slower" : "faster"
                        rows++
                        for (i = 1; i <= m; i++) { touched++; if (v[k, i] == want) hit++ }
                        list = list sprintf("\n    %s: median %+.1f%%", k, 100 * med)
                    } else if (!sheaf) {
                        for (i = 1; i <= m; i++) { other++; if (v[k, i] == "faster" || v[k, i] == "slower") wrong++ }
                    }
                }
                printf "  detection (%s): %d of %d comparisons of touched rows called so (%.1f%%); %d rows touched by 10%% or more:%s\n", mode, hit, touched, touched ? 100 * hit / touched : 0, rows, list
                printf "  the other allocators'"'"' rows in those comparisons: %d of %d called faster or slower\n", wrong, other
            }' "$logs/slowed.tsv"
    done
}

if [ "${1:-}" = --tally ]; then
    logs=${2:?usage: .ci/compare-proof.sh --tally DIR}
    rounds=$(find "$logs" -maxdepth 1 -name 'a[0-9]*.json' | wc -l)
    calibration=$(find "$logs" -maxdepth 1 -name 'c[0-9]*.json' | wc -l)
    instructions=$(cat "$logs/instructions")
else
    rounds=${1:-6}
    calibration=${2:-6}
    instructions=${3:-20}
    logs="results/runs/compare-proof-$(date -u +%Y-%m-%dT%H-%M-%SZ)"
    mkdir -p "$logs"
    echo "$instructions" >"$logs/instructions"
    measure_all
fi
compare_all
tally | tee "$logs/summary.txt"
