#!/usr/bin/env bash
# Run the conformance suite in its own virtualenv (created/refreshed from requirements.txt).
# Extra arguments go to pytest, e.g. `conformance/run.sh -x -k listener`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TRELLIS_CONFORMANCE_VENV:-$here/.venv}"
if [[ ! -x "$venv/bin/pytest" ]] || ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/.requirements.txt"
fi
cd "$here"
PATH="$venv/bin:$PATH" exec "$venv/bin/python" -m pytest "$@"
