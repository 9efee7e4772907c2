#!/usr/bin/env bash
# Builds each function as SAM deploys it (cargo-lambda, arm64, the release profile) and prints
# the size of its zipped `bootstrap`. Uses its own target directory so it never invalidates the
# debug build the tests use; the first run takes about 12 minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/setup.sh tooling
rustup target add aarch64-unknown-linux-gnu >/dev/null
export PATH="$root/.venv/tooling/bin:$PATH"
# The crates, and the functions (binaries) they build: the retry crate also builds publish-events.
crates=(intake dispatch-push dispatch-sms dispatch-email retry)
functions=("${crates[@]}" publish-events)
packages=()
for crate in "${crates[@]}"; do packages+=(-p "$crate"); done

CARGO_TARGET_DIR="$root/target/package" cargo lambda build --release --arm64 --output-format zip \
    --lambda-dir "$root/target/package/lambda" "${packages[@]}"

# The target is 4 MiB (4,194,304 bytes); decimal MB are shown too, as the two readings differ.
limit=$((4 * 1024 * 1024))
status=0
printf '%-16s %12s %8s %8s\n' function "zip (bytes)" MiB MB
for function in "${functions[@]}"; do
    bytes="$(stat -c %s "$root/target/package/lambda/$function/bootstrap.zip")"
    awk -v f="$function" -v b="$bytes" 'BEGIN { printf "%-16s %12d %8.2f %8.2f\n", f, b, b / 1048576, b / 1000000 }'
    [ "$bytes" -le "$limit" ] || status=1
done
[ "$status" -eq 0 ] && echo "every package is within 4 MiB" || echo "some package is over 4 MiB"
exit "$status"
