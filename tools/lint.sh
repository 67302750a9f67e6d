#!/usr/bin/env bash
# tools/lint.sh: lint and format checks for the Python (ruff) and C++/CUDA (clang-format) sources.
#
#   tools/lint.sh          check only: `ruff check`, `ruff format --check`, `clang-format --dry-run -Werror`;
#                          exits 1 when any of them finds something (CI runs it first, to fail fast)
#   tools/lint.sh --fix    apply: `ruff check --fix`, `ruff format`, `clang-format -i`; then lists what is
#                          left that no tool can fix (and exits 1 if anything is)
#
# The rules live in pyproject.toml ([tool.ruff]) and .clang-format. The tools are pinned here and
# installed on first use (from PyPI, ordinary pip) into their own small venv, BIDFCL_LINT_VENV (default
# .venv-lint in the repository), made from PYTHON (default python3); a venv with other versions is
# brought to these. Files: the tracked and untracked-but-not-ignored ones under python/, tests/,
# benchmarks/, tools/ (Python) and cpp/ (C++/CUDA).
set -euo pipefail

RUFF_VERSION=0.17.6
CLANG_FORMAT_VERSION=23.1.5

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${BIDFCL_LINT_VENV:-.venv-lint}
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac

say() { echo "lint: $*" >&2; }

fix=0
case "${1:-}" in
  "") ;;
  --fix) fix=1 ;;
  -h | --help) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) say "unknown argument '$1' (expected nothing or --fix)"; exit 2 ;;
esac

installed_versions() {
  [ -x "$VENV/bin/ruff" ] && [ -x "$VENV/bin/clang-format" ] || return 1
  "$VENV/bin/ruff" --version 2>/dev/null | grep -qx "ruff $RUFF_VERSION" || return 1
  "$VENV/bin/clang-format" --version 2>/dev/null | grep -q "clang-format version $CLANG_FORMAT_VERSION\b" || return 1
}

if ! installed_versions; then
  base=${PYTHON:-python3}
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$base" -m venv "$VENV"; }
  say "installing ruff==$RUFF_VERSION clang-format==$CLANG_FORMAT_VERSION into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "ruff==$RUFF_VERSION" \
    "clang-format==$CLANG_FORMAT_VERSION"
  installed_versions || { say "the pinned versions did not install into $VENV"; exit 2; }
fi
RUFF="$VENV/bin/ruff"
CLANG_FORMAT="$VENV/bin/clang-format"

# tracked and new (not ignored) files; outside a git checkout, everything under the folders
list_files() {
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- "$@" | while IFS= read -r -d '' f; do
      [ -f "$f" ] && printf '%s\0' "$f"
    done
  else
    local dir pattern
    for pattern in "$@"; do
      dir=${pattern%%/*}
      find "$dir" -type f -name "${pattern##*/}" -print0
    done
  fi
}
PY_DIRS=(python tests benchmarks tools)
mapfile -d '' CPP_FILES < <(list_files 'cpp/*.cpp' 'cpp/*.cu' 'cpp/*.h' 'cpp/*.cuh' | sort -z)

status=0
if [ "$fix" = 1 ]; then
  "$RUFF" check --fix --quiet "${PY_DIRS[@]}" || true  # what is left is listed below
  "$RUFF" format --quiet "${PY_DIRS[@]}"
  [ ${#CPP_FILES[@]} -eq 0 ] || "$CLANG_FORMAT" -i --style=file "${CPP_FILES[@]}"
  say "fixed what the tools fix; left to fix by hand:"
  "$RUFF" check "${PY_DIRS[@]}" || status=1
else
  say "ruff $RUFF_VERSION check"
  "$RUFF" check "${PY_DIRS[@]}" || status=1
  say "ruff $RUFF_VERSION format --check"
  "$RUFF" format --check "${PY_DIRS[@]}" || status=1
  say "clang-format $CLANG_FORMAT_VERSION --dry-run -Werror (${#CPP_FILES[@]} files)"
  if [ ${#CPP_FILES[@]} -gt 0 ]; then
    "$CLANG_FORMAT" --dry-run -Werror --style=file "${CPP_FILES[@]}" || status=1
  fi
  [ "$status" = 0 ] && say "clean" || say "findings above; \`tools/lint.sh --fix\` applies what the tools can fix"
fi
exit "$status"
