#!/usr/bin/env bash
# Sets up everything on a fresh machine (the pinned emulator in a project venv, the Rust build)
# and starts the whole system locally: the emulator, every queue/table/topic of template.yaml,
# the HTTP API and every event-source mapping and schedule. Ctrl-C (or SIGTERM) stops it all.
# Arguments go to local-stack (see `scripts/up.sh --help`), e.g. --api-port 3001.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/setup.sh emulator
cargo build --bin local-stack
# Run where cargo built it (CARGO_TARGET_DIR, when set, moves it); cargo run replaces itself
# with the binary, so signals reach the stack.
exec cargo run --quiet --bin local-stack -- --template template.yaml --moto-server tools/emulator/moto-server "$@"
