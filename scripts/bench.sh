#!/usr/bin/env bash
# Runs the benchmarks (all, or the ones named: aws_requests, backlog, cold_start, cpu,
# cpu_instructions, package_size, schedule, throughput) and prints their figures; BENCHMARKS.md records them
# with the method.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(cpu cpu_instructions aws_requests cold_start package_size throughput backlog schedule)

# Instructions one run of the CPU bench's STEP makes N times over, counted by callgrind.
instructions() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" --repeat "$2" "$3" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

# Each step of the CPU bench, in instructions per run: the count at 2N runs less the count at N,
# over N, so the set-up (and the first run's one-time work) cancels out.
cpu_instructions() {
    local bench n=500 step one two
    bench="$(cargo bench -p intake --bench cpu --no-run --message-format=json |
        python3 -c 'import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("target", {}).get("name") == "cpu" and message.get("executable"):
        print(message["executable"])')"
    printf '%-10s %14s\n' step instructions
    for step in $("$bench" --steps); do
        one="$(instructions "$bench" "$step" "$n")"
        two="$(instructions "$bench" "$step" $((2 * n)))"
        printf '%-10s %14d\n' "$step" $(((two - one) / n))
    done
}
for bench in "${benches[@]}"; do
    case "$bench" in
        aws_requests) scripts/with-emulator.sh cargo bench -p local-stack --bench aws_requests ;;
        backlog) scripts/with-emulator.sh cargo bench -p local-stack --bench backlog ;;
        cold_start)
            # The functions as Lambda runs them (release profile) and the hello-world baseline.
            cargo build --release -p intake -p dispatch-push -p dispatch-sms -p dispatch-email -p retry -p hello-world
            scripts/with-emulator.sh cargo bench -p local-stack --bench cold_start
            ;;
        cpu) cargo bench -p intake --bench cpu ;;
        cpu_instructions) cpu_instructions ;;
        package_size) scripts/package-size.sh ;;
        schedule) scripts/with-emulator.sh cargo bench -p local-stack --bench schedule ;;
        throughput) scripts/with-emulator.sh cargo bench -p local-stack --bench throughput ;;
        *) echo "bench.sh: unknown benchmark $bench (aws_requests, backlog, cold_start, cpu, cpu_instructions, package_size, schedule, throughput)" >&2; exit 2 ;;
    esac
done
