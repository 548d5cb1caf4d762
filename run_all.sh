#!/usr/bin/env bash
# Regenerate every result of the kit: runs notebooks/01 ... 09 in order with papermill.
#
#   ./run_all.sh                       # profile `default` (the CPU reference run, <= 60 min)
#   ./run_all.sh --profile smoke       # tiny end-to-end check (a few minutes)
#   ./run_all.sh --from 04             # start at notebook 04 (earlier artifacts must exist)
#   ./run_all.sh --only 05 -p SEED 1   # one notebook, with a parameter
#   ./run_all.sh --force               # rerun notebooks even when up to date
#   ./run_all.sh --dry-run             # say what would run
#   ./run_all.sh --profile paper --dry-run   # list the paper's files: present, missing, sources
#   ./run_all.sh --no-venv             # use the current (conda) interpreter instead of .venv
#   ./run_all.sh --profile small --processes 4   # 04-06 train and evaluate in 4 processes
#                                      # (torchrun: one per GPU; CPU processes use gloo)
#
# Finished notebooks are stamped (key: notebook, gemkr code, pins, parameters, upstream stamps), so a
# rerun resumes where it stopped. Executed copies: results/<profile>/executed/; logs: logs/<profile>/;
# manifest: results/<profile>/manifest.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# The explicit run order (never a glob).
NOTEBOOKS=(01_data_prep 02_detection 03_index 04_training 05_evaluation 06_ablations
           07_modality_keywords 08_case_studies 09_your_data)

ARGS=()
BOOT_ARGS=()
for a in "$@"; do
  case "$a" in
    --no-venv) BOOT_ARGS+=(--no-venv) ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) ARGS+=("$a") ;;
  esac
done

# 1. Validate profile, notebook selection and parameter names before installing or running anything.
#    A usage error exits 2 with one line naming it (nothing to resume: fix the command).
#    The `paper` profile's local files (data, EVA, LLaMA, YOLO) are checked here too: --dry-run lists
#    them, and a missing one stops the run with exit 1 before anything installs.
python3 tools/run_all.py --check-only --notebooks "${NOTEBOOKS[@]}" ${ARGS[@]+"${ARGS[@]}"} || exit $?
export GEMKR_PREFLIGHT_SHOWN=1

trap 'echo "run_all.sh: stopped (exit $?) — rerun the same command to resume." >&2' ERR
trap 'echo "run_all.sh: interrupted — rerun the same command to resume." >&2; exit 130' INT

# 2. Environment (.venv, pinned packages, Jupyter kernel); a no-op once done.
source tools/bootstrap.sh ${BOOT_ARGS[@]+"${BOOT_ARGS[@]}"}
gemkr_bootstrap

# The executed copies under results/ are for reading: no progress bars in them (tqdm's widgets
# stay frozen at 0 % in any viewer, ultralytics' bars are ANSI streams; the kit's own loops read
# TQDM_DISABLE through gemkr.progress, transformers' through HF_HUB_DISABLE_PROGRESS_BARS);
# papermill's own bar in this terminal shows the progress cell by cell. Figures are shown
# explicitly (io.show_figure).
export PYTHONHASHSEED=0 MPLBACKEND=Agg SOURCE_DATE_EPOCH=0 HF_HUB_OFFLINE=1 \
       TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1 YOLO_VERBOSE=False \
       HF_HUB_DISABLE_PROGRESS_BARS=1
export CUBLAS_WORKSPACE_CONFIG=:4096:8

# 3. Run.
"$GEMKR_PY" tools/run_all.py --notebooks "${NOTEBOOKS[@]}" ${ARGS[@]+"${ARGS[@]}"}
