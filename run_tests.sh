#!/usr/bin/env bash
# The kit's test command: sets up the environment if needed, then runs pytest on tests/ (unit tests,
# static notebook checks) and every notebook in the `smoke` profile with nbval (lax mode: each
# notebook's `## Checks` asserts are the test), with the network disabled.
#
#   ./run_tests.sh                 # everything
#   ./run_tests.sh tests/test_index.py -k count   # extra arguments go to pytest
#   ./run_tests.sh --no-venv       # use the current (conda) interpreter
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

ARGS=()
BOOT_ARGS=()
for a in "$@"; do
  if [[ "$a" == "--no-venv" ]]; then BOOT_ARGS+=(--no-venv); else ARGS+=("$a"); fi
done

source tools/bootstrap.sh ${BOOT_ARGS[@]+"${BOOT_ARGS[@]}"}
gemkr_bootstrap

export PYTHONHASHSEED=0 MPLBACKEND=Agg TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=2 GEMKR_BLOCK_NETWORK=1 GEMKR_BATCH=1

if [[ ${#ARGS[@]} -eq 0 ]]; then
  ARGS=(tests notebooks)
fi
# pyproject.toml adds --allow-hosts (loopback only) to every pytest call: no network in tests.
exec "$GEMKR_PY" -m pytest \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider "${ARGS[@]}"
