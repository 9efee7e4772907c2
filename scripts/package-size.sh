#!/usr/bin/env bash
# Builds each function as SAM deploys it (cargo-lambda, arm64, the release profile) and prints
# the size of its zipped `bootstrap`. Uses its own target directory so it never invalidates the
# debug build the tests use; the first run takes about 10 minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/setup.sh tooling
rustup target add aarch64-unknown-linux-gnu >/dev/null
export PATH="$root/.venv/tooling/bin:$PATH"
functions=(intake dispatch-push dispatch-sms dispatch-email retry)
packages=()
for function in "${functions[@]}"; do packages+=(-p "$function"); done

CARGO_TARGET_DIR="$root/target/package" cargo lambda build --release --arm64 --output-format zip \
    --lambda-dir "$root/target/package/lambda" "${packages[@]}"

limit=$((4 * 1024 * 1024))
status=0
printf '%-16s %12s %12s\n' function "zip (bytes)" "MB"
for function in "${functions[@]}"; do
    zip="$root/target/package/lambda/$function/bootstrap.zip"
    bytes="$(stat -c %s "$zip")"
    printf '%-16s %12d %12.2f\n' "$function" "$bytes" "$(echo "$bytes / 1048576" | bc -l)"
    [ "$bytes" -le "$limit" ] || status=1
done
[ "$status" -eq 0 ] && echo "every package is within 4 MB" || echo "some package is over 4 MB"
exit "$status"
