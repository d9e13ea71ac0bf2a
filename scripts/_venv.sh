# Sourced by scripts/serve and scripts/test: make sure .venv exists and holds the project.
# Re-installs (and rebuilds the native extensions) only when the packaging files or native/ sources changed
# since the last install.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.frontend-installed"
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
stale() {
  [ ! -f "$STAMP" ] && return 0
  for f in "$ROOT/setup.cfg" "$ROOT/setup.py" "$ROOT/pyproject.toml" "$ROOT"/native/*.pyx "$ROOT"/native/*.pxd "$ROOT"/frontend/kv/*.pxd; do
    [ "$f" -nt "$STAMP" ] && return 0
  done
  return 1
}
if stale; then
  "$PY" -m pip install -q --upgrade pip >&2
  "$PY" -m pip install -q -e "$ROOT[${FRONTEND_EXTRAS:-test,bench}]" >&2
  touch "$STAMP"
fi
