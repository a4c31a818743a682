#!/usr/bin/env bash
# Create (if missing) the virtualenv for peer benchmarks and install truthound 3.2.0 from PyPI.
# Idempotent. Prints the venv's python path on stdout; progress goes to stderr.
#   PY=$(bash bench/peers/setup.sh) && "$PY" bench/peers/truthound_stream.py FILE --batch 1000
set -euo pipefail

VERSION=3.2.0
VENV="${CLEAN_HOST_CACHE:-$HOME/.cache/clean-host}/truthound-venv"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  echo "setup: creating venv $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" >&2
fi

if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('truthound') != '$VERSION')" 2>/dev/null; then
  echo "setup: installing truthound==$VERSION" >&2
  "$PY" -m pip install -q --disable-pip-version-check "truthound==$VERSION" >&2
fi

echo "$PY"
