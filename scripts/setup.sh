#!/usr/bin/env bash
# Installs everything the project needs that is not Rust itself: project-local Python venvs
# (the pinned emulator and SAM's translator; lint/build tooling; checkov; and, asked for by
# scripts/api-fuzz.sh only, schemathesis) and the browser suite's Chromium and Node packages.
# Idempotent and fast when nothing changed: each venv or package set is installed again only
# when its requirements or lock file changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venvs="$root/.venv"
mkdir -p "$venvs"

install_venv() {
  local name="$1" requirements="$2"
  local dir="$venvs/$name" stamp="$venvs/$name.stamp"
  local want
  want="$(sha256sum "$requirements" | cut -d' ' -f1)"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "setup: installing $name venv from ${requirements#$root/} (first run takes a few minutes)" >&2
  rm -rf "$dir" "$stamp"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
}

# The browser suite: Debian's Chromium (installed from Debian's packages when missing; a test
# tool's own browser download is not used) and the pinned Node packages that drive it.
install_browser() {
  if [ ! -x /usr/bin/chromium ]; then
    echo "setup: installing Debian's chromium (first run takes a few minutes)" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
  local dir="$root/tools/browser-tests" stamp="$venvs/browser-tests.stamp" want
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ -d "$dir/node_modules" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "setup: installing the browser tests' Node packages from tools/browser-tests/package-lock.json" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --silent)
  echo "$want" > "$stamp"
}

case "${1:-all}" in
  emulator) install_venv emulator "$root/tools/requirements-emulator.txt" ;;
  tooling) install_venv tooling "$root/tools/requirements-tooling.txt" ;;
  checkov) install_venv checkov "$root/tools/requirements-checkov.txt" ;;
  api-fuzz) install_venv api-fuzz "$root/tools/requirements-api-fuzz.txt" ;;
  browser) install_browser ;;
  all)
    install_venv emulator "$root/tools/requirements-emulator.txt"
    install_venv tooling "$root/tools/requirements-tooling.txt"
    install_venv checkov "$root/tools/requirements-checkov.txt"
    install_browser
    ;;
  *) echo "usage: scripts/setup.sh [emulator|tooling|checkov|api-fuzz|browser|all]" >&2; exit 2 ;;
esac
