#!/usr/bin/env bash
# The kit's test command: sets up the environment if needed, then runs pytest on tests/ (unit tests,
# static notebook checks) and every notebook in the `smoke` profile with nbval (lax mode: each
# notebook's `## Checks` asserts are the test), with the network disabled.
#
#   ./run_tests.sh                 # everything
#   ./run_tests.sh tests/test_index.py -k count   # extra arguments go to pytest
#   ./run_tests.sh --browser       # the JupyterLab browser test (installs chromium + playwright)
#   ./run_tests.sh --no-venv       # use the current (conda) interpreter
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

ARGS=()
BOOT_ARGS=()
BROWSER=0
for a in "$@"; do
  case "$a" in
    --no-venv) BOOT_ARGS+=(--no-venv) ;;
    --browser) BROWSER=1 ;;
    *) ARGS+=("$a") ;;
  esac
done

source tools/bootstrap.sh ${BOOT_ARGS[@]+"${BOOT_ARGS[@]}"}
gemkr_bootstrap

export PYTHONHASHSEED=0 MPLBACKEND=Agg TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=2 GEMKR_BLOCK_NETWORK=1 GEMKR_BATCH=1

if [[ $BROWSER -eq 1 ]]; then
  # Debian's Chromium (no browser download at run time) and the pinned playwright that drives it
  if [[ ! -x /usr/bin/chromium ]]; then
    echo "run_tests: installing Debian's chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  "$GEMKR_PY" -c 'import playwright' 2>/dev/null \
    || "$GEMKR_PY" -m pip install --disable-pip-version-check -q -r requirements-browser.txt
  for nb in 01 02 03 04; do  # notebook 08 needs the smoke artifacts of 01-04 (no-op when done)
    ./run_all.sh --profile smoke --only "$nb" ${BOOT_ARGS[@]+"${BOOT_ARGS[@]}"} >/dev/null
  done
  export GEMKR_BROWSER=1
  [[ ${#ARGS[@]} -eq 0 ]] && ARGS=(tests/browser)
fi
if [[ ${#ARGS[@]} -eq 0 ]]; then
  ARGS=(tests notebooks --ignore=tests/browser)
fi
# pyproject.toml adds --allow-hosts (loopback only) to every pytest call: no network in tests.
exec "$GEMKR_PY" -m pytest \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider "${ARGS[@]}"
