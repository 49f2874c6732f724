#!/usr/bin/env bash
# Make sure the browser test has Debian's Chromium (Playwright's own download is not needed:
# the test launches /usr/bin/chromium through the node driver shipped in the playwright wheel).
# Idempotent: does nothing when /usr/bin/chromium exists.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "browser: /usr/bin/chromium is missing and apt-get is not available; install Chromium, or set GOVERN_CHROMIUM" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
echo "browser: installed $(/usr/bin/chromium --version 2>/dev/null | head -1)"
