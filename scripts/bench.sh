#!/usr/bin/env bash
# Runs the benchmarks (all, or the ones named: aws_requests, cpu, package_size) and prints their
# figures; BENCHMARKS.md records them with the method.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(cpu aws_requests package_size)
for bench in "${benches[@]}"; do
    case "$bench" in
        aws_requests) scripts/with-emulator.sh cargo bench -p local-stack --bench aws_requests ;;
        cpu) cargo bench -p intake --bench cpu ;;
        package_size) scripts/package-size.sh ;;
        *) echo "bench.sh: unknown benchmark $bench (aws_requests, cpu, package_size)" >&2; exit 2 ;;
    esac
done
