#!/usr/bin/env bash
# Runs the benchmarks (all, or the ones named: aws_requests, cold_start, cpu, package_size,
# throughput) and prints their figures; BENCHMARKS.md records them with the method.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(cpu aws_requests cold_start package_size throughput)
for bench in "${benches[@]}"; do
    case "$bench" in
        aws_requests) scripts/with-emulator.sh cargo bench -p local-stack --bench aws_requests ;;
        cold_start)
            # The functions as Lambda runs them (release profile) and the hello-world baseline.
            cargo build --release -p intake -p dispatch-push -p dispatch-sms -p dispatch-email -p retry -p hello-world
            scripts/with-emulator.sh cargo bench -p local-stack --bench cold_start
            ;;
        cpu) cargo bench -p intake --bench cpu ;;
        package_size) scripts/package-size.sh ;;
        throughput) scripts/with-emulator.sh cargo bench -p local-stack --bench throughput ;;
        *) echo "bench.sh: unknown benchmark $bench (aws_requests, cold_start, cpu, package_size, throughput)" >&2; exit 2 ;;
    esac
done
