"""Driver behind run_all.sh: validate, then execute the notebooks in order with papermill.

Called twice by run_all.sh: first with ``--check-only`` by any python3 (standard library only, so a
bad profile or parameter name is rejected in about a second, before the environment is installed),
then by the kit's interpreter to run. See ``./run_all.sh --help``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the driver must work before `pip install -e .` has run

from gemkr import artifacts, notebooks, paper_files  # noqa: E402
from gemkr.config import PROFILE_NAMES, get_config  # noqa: E402

# Per-cell timeout (s): a hung cell fails the run instead of blocking it forever.
CELL_TIMEOUT = {"smoke": 900, "default": 3600}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line naming the problem, exit 2 (not argparse's usage)
        fail(f"{message} (see ./run_all.sh --help)")


# the notebooks whose trainings (`train.fit`) and evaluations (`distributed.in_batches`) share
# their work out under N processes; the others run in one
DISTRIBUTED = ("04_training", "05_evaluation", "06_ablations")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--processes needs a whole number >= 1, not {text!r}")
    return int(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = _Parser(prog="run_all.sh", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default", help="smoke | default | small | paper")
    ap.add_argument("--from", dest="start", metavar="NN", help="start at notebook NN (e.g. 04)")
    ap.add_argument("--only", metavar="NN", help="run only notebook NN")
    ap.add_argument("--force", action="store_true",
                    help="rerun notebooks even when up to date, with FORCE=True (caches rebuilt)")
    ap.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    ap.add_argument(
        "-p",
        dest="params",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="notebook parameter (repeatable)",
    )
    ap.add_argument("--processes", type=_positive, default=1, metavar="N",
                    help="run the trainings and evaluations of notebooks "
                    f"{', '.join(n[:2] for n in DISTRIBUTED)} in N processes (torchrun: one per "
                    "GPU, or N CPU processes with gloo)")
    ap.add_argument("--check-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--notebooks", nargs="+", default=list(notebooks.NOTEBOOKS), help=argparse.SUPPRESS
    )
    return ap.parse_args(argv)


def fail(msg: str, code: int = 2) -> None:
    print(f"run_all: {msg}", file=sys.stderr)
    sys.exit(code)


def select(names: list[str], start: str | None, only: str | None) -> list[str]:
    """The notebooks to consider, in order; --from / --only take the two-digit prefix."""
    if start is not None and only is not None:
        fail(f"--from {start} and --only {only} conflict: give one of them")
    for flag, nn in (("--from", start), ("--only", only)):
        if nn is not None and not any(n.startswith(f"{nn}_") for n in names):
            fail(f"{flag} {nn}: no such notebook; notebooks: {', '.join(n[:2] for n in names)}")
    if only is not None:
        return [n for n in names if n.startswith(f"{only}_")]
    if start is not None:
        return [n for n in names if n[:2] >= start]
    return names


def plan(args: argparse.Namespace) -> tuple[dict[str, dict], dict[str, dict], dict[str, dict]]:
    """Validate everything; exits 2 on any problem. Returns the typed parameters of the selected
    notebooks, those of every notebook (stamp keys chain through all of them) and each
    notebook's declared parameters, all from one read of the notebooks."""
    if args.profile not in PROFILE_NAMES:
        fail(f"unknown profile {args.profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    declared: dict[str, dict] = {}
    for name in args.notebooks:
        path = notebooks.notebook_path(name)
        if not path.exists():
            fail(f"notebook {path.relative_to(ROOT)} is missing")
        try:
            declared[name] = notebooks.read_parameters(path)
        except ValueError as err:
            fail(str(err))
    selected = select(args.notebooks, args.start, args.only)
    given = {"PROFILE": args.profile}
    for name, value in args.params:
        if name == "PROFILE":
            fail("set the profile with --profile NAME, not -p PROFILE")
        if not any(name in declared[nb] for nb in selected):
            known = sorted({p for nb in selected for p in declared[nb]} - {"PROFILE"})
            fail(
                f"unknown parameter {name!r}: no selected notebook declares it; "
                f"declared: {', '.join(known)}"
            )
        given[name] = value
    out = {}
    for nb in [*selected, *(n for n in args.notebooks if n not in selected)]:  # selected first
        try:
            out[nb] = {k: declared[nb][k].parse(v) for k, v in given.items() if k in declared[nb]}
        except ValueError as err:
            fail(f"{nb}: {err}")
    return {nb: out[nb] for nb in selected}, out, declared


def stamp_key(previous: str, name: str, params: dict, source: str) -> str:
    """Changes when the notebook, gemkr's code, the pins, the parameters or an upstream key do."""
    h = hashlib.sha256(previous.encode())
    for f in (
        notebooks.notebook_path(name),
        ROOT / "requirements.txt",
        ROOT / "requirements-nodeps.txt",
    ):
        h.update(f.read_bytes())
    h.update(source.encode())  # gemkr's source hash
    h.update(json.dumps(params, sort_keys=True).encode())
    return h.hexdigest()


def run_notebook(name: str, params: dict, profile: str, log_path: Path,
                 processes: int = 1) -> tuple[bool, Path]:
    """Execute one notebook with papermill; tee its output to `log_path`. With `processes` > 1
    torchrun starts that many papermill runs of it, each kernel one process of the group
    (tools/papermill_rank.py: the main one writes the executed copy)."""
    out = ROOT / "results" / profile / "executed" / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    launch = [sys.executable, "-m", "papermill"]
    if processes > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node", str(processes), "tools/papermill_rank.py"]
    # repository-relative paths (cwd=ROOT): papermill records them in the executed notebook
    cmd = [
        *launch,
        f"notebooks/{name}.ipynb",
        str(out.relative_to(ROOT)),
        "-k",
        "python3",
        "--cwd",
        "notebooks",
        "--log-output",
        "-y",
        json.dumps(params),
    ]
    if profile in CELL_TIMEOUT:
        cmd += ["--execution-timeout", str(CELL_TIMEOUT[profile])]
    unknown = False
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**os.environ, "GEMKR_BATCH": "1"},  # no interactive widgets in batch runs
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
            unknown |= "Passed unknown parameter" in line
        code = proc.wait()
    return code == 0 and not unknown, out


def hardware() -> dict:
    """The machine a run's numbers come from: processor, cores, and which training path it takes
    (bfloat16 where native, else float32; the two train to different numbers)."""
    import torch

    from gemkr.hardware import bf16_native, processor

    native = bf16_native("cpu")
    return {"processor": processor(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "bf16_native": native, "gpu": torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else None,
            "path": "bfloat16 autocast (native)" if native else "float32"}


def user_command(argv: list[str]) -> str:
    """The command as the user typed it (without the notebook list run_all.sh passes)."""
    shown, skip = [], False
    for a in argv:
        if a == "--notebooks":
            skip = True
            continue
        if skip and not a.startswith("-"):
            continue
        skip = False
        shown.append(a)
    return " ".join(["./run_all.sh", *shown])


def is_cold(profile: str) -> bool:
    """True when no stage cache of `profile` exists yet (a run from scratch)."""
    art = ROOT / "artifacts" / profile
    return not art.exists() or not any(p.name != "_stamps" for p in art.iterdir())


def write_manifest(profile: str, rows: dict[str, dict], run: dict, keys: dict[str, str]) -> Path:
    """``results/<profile>/manifest.json``: this run (command, commit, hardware, cold or not) and
    one row per notebook whose results are current. A notebook this run skipped keeps the row of
    the run that made it; rows of notebooks whose finished-stamp no longer matches the code
    (stale) or that left the run order are dropped, so the file never mixes in an old result
    silently. ``one_cold_run`` says whether every row comes from this run and it started cold."""
    path = ROOT / "results" / profile / "manifest.json"
    try:
        old = json.loads(path.read_text()).get("notebooks", {})
    except (FileNotFoundError, json.JSONDecodeError):
        old = {}
    stamps = ROOT / "artifacts" / profile / "_stamps"
    current = {}
    for name, key in keys.items():
        row = rows.get(name)
        if row is None or row["status"] == "skipped":
            stamp = stamps / f"{name}.stamp"
            fresh = stamp.exists() and stamp.read_text().strip() == key
            if fresh and name in old and old[name].get("status") == "ok":
                current[name] = old[name]
            continue
        current[name] = {**row, "run": run["started"], "commit": run["git"]["commit"],
                         "dirty": run["git"]["dirty"]}
    manifest = {
        "profile": profile,
        "seed": run["seed"],
        "run": {k: v for k, v in run.items() if k != "seed"},
        "one_cold_run": bool(run["cold"]) and len(current) == len(keys) and all(
            r.get("run") == run["started"] and r.get("status") == "ok"
            for r in current.values()),
        "notebooks": current,
        "packages": {
            d.metadata["Name"]: d.version
            for d in sorted(metadata.distributions(),
                            key=lambda d: (d.metadata["Name"] or "").lower())
        },
    }
    return artifacts.write_json(path, manifest)


def drop_outputs(profile: str, stage: str | None = None) -> None:
    """Forget ``outputs.json`` entries of `stage` (before its notebook writes them again) and of
    files that no longer exist."""
    index = ROOT / "results" / profile / "outputs.json"
    try:
        entries = json.loads(index.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return
    keep = {k: v for k, v in entries.items()
            if v.get("stage") != stage and (ROOT / k).exists()}
    if keep != entries:
        artifacts.write_json(index, keep)


def preflight(args: argparse.Namespace) -> None:
    """The local files the profile reads (`paper`: data, EVA, LLaMA, YOLO), checked before
    anything installs or computes: listed by --dry-run; any missing one stops the run (exit 1).
    run_all.sh lists them in its first (check-only) pass and sets GEMKR_PREFLIGHT_SHOWN."""
    needs = paper_files.required(get_config(args.profile))
    if not needs:
        return
    missing = [n for n in needs if not n.present]
    shown = os.environ.get("GEMKR_PREFLIGHT_SHOWN") == "1" and not args.check_only
    if (args.dry_run or missing) and not shown:
        print(paper_files.report(needs))
    if missing:
        fail(f"{len(missing)} of the {len(needs)} files the {args.profile} profile reads are "
             "missing or unusable (listed above); nothing was run", code=1)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    todo, all_params, declared = plan(args)
    preflight(args)
    if args.check_only:
        return 0
    profile = args.profile
    stamps = ROOT / "artifacts" / profile / "_stamps"
    logs = ROOT / "logs" / profile
    run = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": user_command(argv), "git": artifacts.git_state(),
           "cold": is_cold(profile), "seed": next(iter(todo.values()), {}).get("SEED", 0),
           "hardware": None if args.dry_run else hardware(),
           "processes": args.processes,
           "python": sys.version.split()[0]}
    stamps.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    # Keys chain through every notebook, selected or not, so an upstream change reruns downstream;
    # all computed before anything runs, so they describe the code as launched.
    keys, previous, source = {}, profile, artifacts.source_hash()
    for name in args.notebooks:
        keys[name] = previous = stamp_key(previous, name, all_params[name], source)
    for name in todo:
        key = keys[name]
        stamp = stamps / f"{name}.stamp"
        if not args.force and stamp.exists() and stamp.read_text().strip() == key:
            print(f"== {name}: up to date, skipped (use --force to rerun)")
            rows[name] = {"status": "skipped", "wall_s": 0.0}
            continue
        # --force: the notebook also rebuilds its caches (FORCE is not part of the stamp key:
        # it changes how results are reached, not what they are)
        params = {**todo[name], **({"FORCE": True} if args.force and "FORCE" in declared[name]
                                   else {})}
        n_proc = args.processes if name in DISTRIBUTED else 1
        if args.dry_run:
            print(f"== {name}: would run with {json.dumps(params)}"
                  + (f" in {n_proc} processes" if n_proc > 1 else ""))
            continue
        print(f"== {name}: running with {json.dumps(params)}"
              + (f" in {n_proc} processes" if n_proc > 1 else ""))
        stamp.unlink(missing_ok=True)  # a half-run notebook never looks finished
        drop_outputs(profile, name[:2])
        start = time.perf_counter()
        log_path = logs / f"{name}.log"
        try:
            ok, out = run_notebook(name, params, profile, log_path, n_proc)
        except KeyboardInterrupt:
            rows[name] = {"status": "interrupted", "wall_s": round(time.perf_counter() - start, 1)}
            write_manifest(profile, rows, run, keys)
            print(f"\nrun_all: interrupted in {name}; rerun the same command to resume there.")
            return 130
        wall = round(time.perf_counter() - start, 1)
        rows[name] = {
            "status": "ok" if ok else "failed",
            "wall_s": wall,
            "executed": str(out.relative_to(ROOT)),
            "log": str(log_path.relative_to(ROOT)),
        }
        if ok:
            artifacts.atomic_write(stamp, key + "\n")
        write_manifest(profile, rows, run, keys)
        if not ok:
            print_table(rows)
            print(
                f"run_all: {name} FAILED after {wall} s.\n  log: {log_path}\n  executed notebook "
                f"(error banner at the failing cell): {out}\n  fix it and rerun to resume here."
            )
            return 1
    if args.dry_run:
        return 0
    drop_outputs(profile)
    write_manifest(profile, rows, run, keys)
    print_table(rows)
    report_goals(profile)
    return 0


def report_goals(profile: str) -> None:
    """Write ``results/<profile>/goals.csv`` and print which goals are met. Goals are reported,
    never a failure of the run: a sound run may miss a research target (gemkr/goals.py)."""
    from gemkr import goals

    if profile == "smoke":  # the goals are the CPU reference run's; smoke's tiny models have none
        return
    table = goals.evaluate(profile)
    goals.save(profile)
    if table.empty:
        return
    print(f"\ngoals ({int(table.met.sum())} of {len(table)} met; results/{profile}/goals.csv):")
    for row in table.itertuples():
        print(f"  {'met   ' if row.met else 'missed'}  {row.goal}  ({row.value:.3f})")


def print_table(rows: dict[str, dict]) -> None:
    print(f"\n{'notebook':<24}{'status':<13}{'wall time':>10}")
    for name, row in rows.items():
        print(f"{name:<24}{row['status']:<13}{row['wall_s']:>9.1f}s")
    print(f"{'total':<37}{sum(r['wall_s'] for r in rows.values()):>9.1f}s")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
