#!/usr/bin/env bash
# Make sure Debian's Chromium is installed (the browser tests drive it with Python playwright;
# never `playwright install`, which downloads a browser build and fails offline), with a CJK
# font: the glossary gives every term's Chinese name, which would otherwise render as boxes.
set -euo pipefail
have_font() { fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk"; }
if command -v chromium >/dev/null 2>&1 && have_font; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null
command -v chromium >/dev/null || { echo "ensure_chromium.sh: chromium did not install" >&2; exit 1; }
have_font || { echo "ensure_chromium.sh: no CJK font after installing fonts-wqy-zenhei" >&2; exit 1; }
