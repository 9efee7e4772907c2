#!/usr/bin/env bash
# The reliability suite (issue 7) at full size: the property tests with 10,000 cases each, then
# the scenarios against the pinned emulator (auth matrix, 50 concurrent duplicates, poison,
# 2,000 notifications under faults and restarts, 1,000 SMS through an SNS outage), printing how
# many cases held. The figures go to BENCHMARKS.md; `scripts/test.sh` runs the same scenarios
# smaller. Scenarios named as arguments run alone, without the property tests: core, pipeline,
# sms-failover.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "$#" -eq 0 ]; then
    PROPTEST_CASES="${PROPTEST_CASES:-10000}" cargo test --workspace --lib properties
fi
# The dev profile: these are correctness figures, and the tests' build serves them (the bench
# profile would first build every dependency optimised, about 18 minutes here).
scripts/with-emulator.sh cargo bench --profile dev -p local-stack --bench reliability -- "$@"
