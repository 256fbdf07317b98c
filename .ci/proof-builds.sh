# Sourced by .ci/compare-proof.sh and .ci/ab-proof.sh: the suite both measure and the two
# builds they compare. Needs $logs and $instructions; sets $plain and $slowed.
plain=target/release/sheafbench
slowed=target/slowdown/release/sheafbench
# The suite, without the rounds (each script gives its own --runs).
suite=(workloads/churn-lifo.yaml workloads/churn-random.yaml workloads/burst.yaml
    workloads/prefill-burst.yaml --alloc sheaf,mimalloc,system --threads 1,2
    --duration 100ms --set warmup=50ms)

# The plain build and the one slowed by $instructions instructions a pair (feature
# sheaf/slowdown, in a target directory of its own); cargo's output to $logs/build.log.
build_both() {
    cargo build --release -p sheafbench >"$logs/build.log" 2>&1
    SHEAF_SLOWDOWN_INSTRUCTIONS=$instructions cargo build --release -p sheafbench \
        --features sheaf/slowdown --target-dir target/slowdown >>"$logs/build.log" 2>&1
}
