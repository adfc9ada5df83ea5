#!/usr/bin/env bash
# Runs pytest and maps "no tests collected" (exit 5) to a failure with a
# clear message: a suite that checks nothing must never pass silently.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "asterfleet: pytest collected no tests for: ${*:-tests}" >&2
  exit 1
fi
exit "$rc"
