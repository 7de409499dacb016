#!/usr/bin/env bash
# Headless Chromium for the Web UI check (tests/integration/test_payload_encryption.py): Debian's
# `chromium` package. Installed when missing and we are root; otherwise say how, and fail.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the Web UI check"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
    command -v chromium >/dev/null 2>&1 && exit 0
fi
echo "headless Chromium is needed by the tests: run \`sudo apt-get install -y chromium\`" >&2
exit 1
