#!/usr/bin/env bash
# Open the kit in JupyterLab, to step through the notebooks.
#
#   ./run_lab.sh                 # JupyterLab on http://127.0.0.1:8888 (next free port if taken)
#   ./run_lab.sh --port 8890     # another port
#   ./run_lab.sh --no-browser    # print the address instead of opening a browser
#   ./run_lab.sh --no-venv       # use the current (conda) interpreter instead of .venv
#
# Sets up .venv like run_all.sh and run_tests.sh (first run: several minutes), registers the kit's
# kernel ("Python 3 (GeMKR kit)"), and serves notebooks/ on the loopback address only. Every
# notebook's PROFILE parameter defaults to "smoke" (seconds per notebook); to look at the
# `default` results, run ./run_all.sh first, then set PROFILE = "default" in the parameters cell.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PORT=8888
LAB_ARGS=()
BOOT_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "run_lab.sh: --port needs a number" >&2; exit 2; }
            PORT="$2"; shift ;;
    --no-browser) LAB_ARGS+=(--no-browser) ;;
    --no-venv) BOOT_ARGS+=(--no-venv) ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run_lab.sh: unknown option $1 (see ./run_lab.sh --help)" >&2; exit 2 ;;
  esac
  shift
done

source tools/bootstrap.sh ${BOOT_ARGS[@]+"${BOOT_ARGS[@]}"}
gemkr_bootstrap

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=module://matplotlib_inline.backend_inline
unset GEMKR_BATCH  # the interactive parts (08's decoding explorer) show in JupyterLab
[[ $(id -u) -eq 0 ]] && LAB_ARGS+=(--allow-root)  # containers often run as root
exec "$GEMKR_PY" -m jupyter lab --ip=127.0.0.1 --port="$PORT" --ServerApp.root_dir="$PWD/notebooks" \
  --LabApp.news_url="" --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
  --LabApp.app_settings_dir="$PWD/tools/jupyterlab" \
  ${LAB_ARGS[@]+"${LAB_ARGS[@]}"}
