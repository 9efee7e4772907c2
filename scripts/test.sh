#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against the emulator and end-to-end tests
# through the local stack. Installs and starts what it needs (the pinned emulator, on a free
# loopback port) and stops it afterwards. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh browser
scripts/setup.sh emulator
# The emulator's own changes to moto answer as moto does (tools/emulator/isolated_moto.py).
.venv/emulator/bin/python tools/emulator/check_emulator.py
exec scripts/with-emulator.sh cargo test --workspace "$@"
