#!/usr/bin/env bash
# Shared environment set-up of run_all.sh and run_tests.sh (sourced, not executed).
#
#   source tools/bootstrap.sh [--no-venv]
#
# Creates .venv with Python 3.11 when absent, installs the pinned requirements (requirements.txt,
# then requirements-nodeps.txt with --no-deps, then the kit itself in editable mode), registers the
# venv's Jupyter kernel as `python3`, and records a stamp keyed by the hash of those files, so a
# second call installs nothing. With --no-venv it uses the current interpreter (conda users).
# On return: $GEMKR_PY is the interpreter to use, and JUPYTER_PATH points at the venv's kernel.

_gemkr_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_gemkr_use_venv=1
for _a in "$@"; do [[ "$_a" == "--no-venv" ]] && _gemkr_use_venv=0; done

_gemkr_die() { echo "bootstrap: $*" >&2; return 1 2>/dev/null || exit 1; }

_gemkr_find_python() {
  # The kit pins Python 3.11 (torch 2.14.1 wheels and every pin were checked on it).
  local c
  for c in "${GEMKR_PYTHON:-}" python3.11 python3; do
    [[ -n "$c" ]] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  return 1
}

gemkr_bootstrap() {
  local py stamp_dir hash
  if [[ $_gemkr_use_venv -eq 1 ]]; then
    if [[ ! -x "$_gemkr_root/.venv/bin/python" ]]; then
      py="$(_gemkr_find_python)" || _gemkr_die "Python 3.11 is required but was not found \
(found: $(python3 --version 2>&1)). Install it (e.g. 'pyenv install 3.11', or \
'conda create -n gemkr python=3.11 && conda activate gemkr' and rerun with --no-venv), \
or point GEMKR_PYTHON at a 3.11 interpreter." || return 1
      echo "bootstrap: creating .venv with $($py --version)"
      "$py" -m venv "$_gemkr_root/.venv" || _gemkr_die "python -m venv failed (Debian: apt-get install python3.11-venv)" || return 1
    fi
    GEMKR_PY="$_gemkr_root/.venv/bin/python"
  else
    GEMKR_PY="$(_gemkr_find_python)" || _gemkr_die "--no-venv needs the current python3 to be 3.11 \
(found: $(python3 --version 2>&1)); e.g. 'conda create -n gemkr python=3.11'" || return 1
  fi
  "$GEMKR_PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
    || _gemkr_die "$GEMKR_PY is not Python 3.11; delete .venv and rerun with Python 3.11" || return 1

  hash="$(cat "$_gemkr_root/requirements.txt" "$_gemkr_root/requirements-nodeps.txt" \
          "$_gemkr_root/pyproject.toml" | sha256sum | cut -c1-16)"
  stamp_dir="$("$GEMKR_PY" -c 'import sys; print(sys.prefix)')"
  if [[ ! -f "$stamp_dir/.gemkr-bootstrap-$hash" ]]; then
    echo "bootstrap: installing pinned requirements into $stamp_dir (first run: several minutes)"
    "$GEMKR_PY" -m pip install --disable-pip-version-check -q -r "$_gemkr_root/requirements.txt" \
      || _gemkr_die "pip install -r requirements.txt failed (see above)" || return 1
    "$GEMKR_PY" -m pip install --disable-pip-version-check -q --no-deps \
      -r "$_gemkr_root/requirements-nodeps.txt" \
      || _gemkr_die "pip install --no-deps -r requirements-nodeps.txt failed" || return 1
    "$GEMKR_PY" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation \
      -e "$_gemkr_root" || _gemkr_die "pip install -e . failed" || return 1
    # The venv's own kernel, named python3 like the notebooks' kernelspec; JUPYTER_PATH (below)
    # puts it ahead of any user-level python3 kernel.
    "$GEMKR_PY" -m ipykernel install --sys-prefix --name python3 \
      --display-name "Python 3 (GeMKR kit)" >/dev/null \
      || _gemkr_die "registering the Jupyter kernel failed" || return 1
    rm -f "$stamp_dir"/.gemkr-bootstrap-*
    touch "$stamp_dir/.gemkr-bootstrap-$hash"
  fi
  export JUPYTER_PATH="$("$GEMKR_PY" -c 'import sys; print(sys.prefix)')/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
  export GEMKR_PY
}
