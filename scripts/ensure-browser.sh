#!/usr/bin/env bash
# Makes sure a headless browser exists for the report tests (the HTML report is opened in Debian's
# Chromium to prove model text cannot run script). Installs Debian's `chromium` when it is missing;
# a machine where that is impossible fails here with the command to run, not later in a test.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "==> installing Debian's chromium (headless browser for the report tests)"
if [ "$(id -u)" != 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; }; then
  echo "error: could not install chromium; run \`apt-get install -y chromium\` and retry" >&2
  exit 1
fi
command -v chromium >/dev/null
