#!/usr/bin/env bash
# Runs a command with the pinned emulator serving on a free loopback port (installed first if
# needed) and NOTIFY_TEST_ENDPOINT pointing at it; stops the emulator afterwards.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/setup.sh emulator

port="$(.venv/emulator/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$root/target/test-emulator.log"
mkdir -p target
tools/emulator/moto-server -H 127.0.0.1 -p "$port" > "$log" 2>&1 &
emulator_pid=$!
trap 'kill "$emulator_pid" 2>/dev/null || true; wait "$emulator_pid" 2>/dev/null || true' EXIT

endpoint="http://127.0.0.1:$port"
.venv/emulator/bin/python - "$endpoint" <<'PY'
import sys, time, urllib.request
deadline = time.time() + 30
while True:
    try:
        urllib.request.urlopen(sys.argv[1] + "/moto-api/data.json", timeout=2)
        break
    except Exception as error:
        if time.time() > deadline:
            sys.exit(f"the emulator did not answer at {sys.argv[1]} within 30 s: {error}")
        time.sleep(0.2)
PY

export NOTIFY_TEST_ENDPOINT="$endpoint"
# The emulator accepts any credentials; these keep the SDK from looking for real ones.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
unset AWS_ENDPOINT_URL AWS_PROFILE
"$@"
