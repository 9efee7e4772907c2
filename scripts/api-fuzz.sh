#!/usr/bin/env bash
# Schemathesis against the served OpenAPI document: starts the whole system locally (as
# scripts/up.sh does, on free ports), generates requests from GET /v1/openapi.json for every
# operation with the demo app's credentials, and fails on any server error or any response the
# document does not describe (status, content type, headers, body schema). Extra arguments go
# to `st run` (e.g. --max-time 60).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/setup.sh api-fuzz
# Installed and built in the foreground, where Ctrl-C reaches them; up.sh's own steps are then
# no-ops.
scripts/setup.sh emulator
cargo build --bin local-stack
free_port() { .venv/api-fuzz/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port="$(free_port)"
emulator_port="$(free_port)"
log="$root/target/api-fuzz-stack.log"
mkdir -p target
scripts/up.sh --api-port "$api_port" --emulator-port "$emulator_port" \
    --outputs-file target/api-fuzz-outputs.json > "$log" 2>&1 &
stack_pid=$!
# SIGINT: the local stack stops on Ctrl-C, taking its emulator with it.
trap 'kill -INT "$stack_pid" 2>/dev/null || true; wait "$stack_pid" 2>/dev/null || true' EXIT

deadline=$((SECONDS + 120))
until grep -q "app secret:" "$log"; do
    kill -0 "$stack_pid" 2>/dev/null || { cat "$log" >&2; echo "api-fuzz: the local stack did not start" >&2; exit 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "api-fuzz: the local stack did not start in time" >&2; exit 1; }
    sleep 1
done
key="$(awk '/app key:/ {print $3}' "$log")"
secret="$(awk '/app secret:/ {print $3}' "$log")"
api="http://127.0.0.1:$api_port"

.venv/api-fuzz/bin/st run "$api/v1/openapi.json" --url "$api" --auth "$key:$secret" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --workers 2 --max-time 240 --no-color "$@"
