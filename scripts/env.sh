# Sourced by scripts/dev and scripts/test: a project virtualenv that is created and
# (re)installed only when pyproject.toml changed, plus the pinned Kafka jars (first use only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
USER_PATH="$PATH"  # the caller's PATH, before ensure_env puts the virtualenv first

die() { echo "stream-infer: $*" >&2; exit 1; }

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

ensure_env() {
  command -v java >/dev/null 2>&1 || die "Java 17+ is needed for the local Kafka broker ('java' not found)"
  if [ ! -x "$VENV/bin/python" ]; then
    local py
    py="$(find_python)" || die "Python 3.11+ is needed (set PYTHON=/path/to/python3.11)"
    echo "creating $VENV with $py" >&2
    "$py" -m venv "$VENV"
  fi
  local stamp="$VENV/.stream-infer-installed" digest
  digest="$(sha256sum < "$ROOT/pyproject.toml" | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$digest" ]; then
    echo "installing stream-infer and its dependencies into $VENV (first run takes a few minutes)" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]"
    echo "$digest" > "$stamp"
  fi
  # Resolves deploy/kafka/pom.xml with Maven into ~/.cache/stream-infer on first use
  # (and says so, in one line, when Maven is missing).
  "$VENV/bin/stream-infer" broker classpath >/dev/null
  export PATH="$VENV/bin:$PATH"
}

# promtool (Debian's `prometheus` package) checks and unit-tests the alert rules in
# tests/deploy. Installed here when missing and we are root on Debian (CI is); otherwise the
# tests that need it fail with a line saying how to get it.
ensure_promtool() {
  command -v promtool >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing promtool (Debian package prometheus)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "stream-infer: promtool not found: install Debian's 'prometheus' package (tests/deploy need it)" >&2
  fi
}
