#!/usr/bin/env bash
# Make sure Debian's Chromium is installed (the browser tests drive it with Python playwright;
# never `playwright install`, which downloads a browser build and fails offline).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null || { echo "ensure_chromium.sh: chromium did not install" >&2; exit 1; }
