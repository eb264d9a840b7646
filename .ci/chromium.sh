#!/usr/bin/env bash
# Debian's chromium for the real-browser notebook test (tests/notebook/test_browser.py), installed
# with apt if it is missing. Nothing downloads a browser of its own (never `playwright install`):
# Playwright drives this one through its executable_path. Prints the browser's path.
# Not root, or no apt: says so and exits 0; the browser test then skips, naming what is missing.
set -euo pipefail
say() { echo "chromium.sh: $*" >&2; }
for name in chromium chromium-browser; do
  if path="$(command -v "$name")"; then echo "$path"; exit 0; fi
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  say "no chromium, and no root apt-get to install it: the browser test will skip"
  exit 0
fi
log="$(mktemp)"
say "installing Debian's chromium (apt-get, ~40 s)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  say "apt-get install chromium failed"
  exit 1
fi
rm -f "$log"
command -v chromium
