#!/usr/bin/env bash
# Does the gate work? Runs the clean gate CLEAN times (default 20) and the gate with an
# injected slowdown (feature sheaf/slowdown; PERMILLE, default 50, is a share of the
# per-thread fast-path pair's reference instruction count: 2 instructions at 48)
# SLOWED times (default 10), and tallies false alarms and detections.
#   .ci/gate-proof.sh [CLEAN] [SLOWED] [PERMILLE]
# Exit status of each gate: 0 pass, 1 regression, anything else: the gate could not run
# (counted apart, never as a pass or an alarm). Logs: results/runs/gate-proof-<time>/.
#
# Every gate records into a results history of the proof's own (GATE_PROOF_DB to use
# another, e.g. one holding earlier clean gates of this machine): once it holds 5 clean
# gates, the ratios are judged by its noise fence instead of the reference (the slowed
# gates are tagged and never enter it). Besides the gates' exit statuses, the summary
# tallies each signal apart: ratio and instruction rows found REGRESSION, and how many
# ratio rows the history judged.
set -uo pipefail
cd "$(dirname "$0")/.."
clean=${1:-20}
slowed=${2:-10}
permille=${3:-50}
logs="results/runs/gate-proof-$(date -u +%Y-%m-%dT%H-%M-%SZ)"
mkdir -p "$logs"
export SHEAFBENCH_DB="${GATE_PROOF_DB:-$PWD/$logs/history.sqlite}"

# The references compared with: the committed ones when both files exist (and
# GATE_PROOF_FRESH is unset), else fresh ones blessed into the log directory first (allowed on
# a dirty tree there; the provenance records it).
ref_args=()
if [ -n "${GATE_PROOF_FRESH:-}" ] || [ ! -f results/reference/instructions.json ] || [ ! -f results/reference/ratios.json ]; then
    echo "blessing fresh references into $logs/reference"
    cargo xtask gate --bless --reference-dir "$logs/reference" >"$logs/bless.log" 2>&1 \
        || { echo "bless failed: see $logs/bless.log"; exit 2; }
    ref_args=(--reference-dir "$logs/reference")
fi

false_alarms=0; clean_passes=0; clean_errors=0
detections=0; misses=0; slowed_errors=0
# Per signal: gates with a ratio (instruction) row found REGRESSION, and gates whose ratios
# the history judged.
declare -A rows=([clean-ratio]=0 [clean-instructions]=0 [slowed-ratio]=0 [slowed-instructions]=0 [clean-history]=0 [slowed-history]=0)
tally() { # tally <clean|slowed> <log>
    grep -qE '^ratio +.*REGRESSION' "$2" && rows[$1-ratio]=$((rows[$1-ratio] + 1))
    grep -qE '^instructions +.*REGRESSION' "$2" && rows[$1-instructions]=$((rows[$1-instructions] + 1))
    grep -qE "judged by this machine's history \([0-9a-f]+\): [1-9]" "$2" && rows[$1-history]=$((rows[$1-history] + 1))
    return 0
}

for i in $(seq 1 "$clean"); do
    cargo xtask gate "${ref_args[@]}" >"$logs/clean-$i.log" 2>&1
    case $? in
        0) clean_passes=$((clean_passes + 1)) ;;
        1) false_alarms=$((false_alarms + 1)) ;;
        *) clean_errors=$((clean_errors + 1)) ;;
    esac
    tally clean "$logs/clean-$i.log"
    echo "clean $i/$clean: passes $clean_passes, false alarms $false_alarms, errors $clean_errors"
done
for i in $(seq 1 "$slowed"); do
    cargo xtask gate "${ref_args[@]}" --slowdown "$permille" >"$logs/slowed-$i.log" 2>&1
    case $? in
        1) detections=$((detections + 1)) ;;
        0) misses=$((misses + 1)) ;;
        *) slowed_errors=$((slowed_errors + 1)) ;;
    esac
    tally slowed "$logs/slowed-$i.log"
    echo "slowed $i/$slowed: detections $detections, misses $misses, errors $slowed_errors"
done

summary="gate proof ($permille per mille slowdown): clean runs $clean: $false_alarms false alarms, \
$clean_passes passes, $clean_errors errors; slowed runs $slowed: $detections detections, \
$misses misses, $slowed_errors errors
  ratio signal: false alarms ${rows[clean-ratio]} of $clean, detections ${rows[slowed-ratio]} of $slowed \
(judged by the history in ${rows[clean-history]} clean and ${rows[slowed-history]} slowed gates)
  instruction signal: false alarms ${rows[clean-instructions]} of $clean, detections ${rows[slowed-instructions]} of $slowed
  history: $SHEAFBENCH_DB"
echo "$summary" | tee "$logs/summary.txt"
[ "$false_alarms" -eq 0 ] && [ "$misses" -eq 0 ] && [ "$clean_errors" -eq 0 ] && [ "$slowed_errors" -eq 0 ]
