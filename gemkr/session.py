"""`setup`: the one call at the top of every notebook (style guide §3).

It validates the profile and overrides, seeds, resolves the device, creates the output folders, sets
the plot style and prints a banner saying what runs where.
"""

from __future__ import annotations

import logging
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from . import artifacts, plots, prerequisites, progress
from .config import Config, get_config
from .paths import STAGES, artifacts_dir, figures_dir, rel, results_dir
from .seed import seed_everything, stage_rng

BANNER_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "open_clip_torch",
    "ultralytics",
    "pydivsufsort",
)


@dataclass(frozen=True)
class Context:
    """What a notebook needs after setup: config, device, generator and its folders."""

    stage: str
    cfg: Config
    device: str
    force: bool
    rng: Any  # numpy Generator of this stage
    artifacts: Path
    results: Path
    figures: Path

    @property
    def profile(self) -> str:
        return self.cfg.profile


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else is checked."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ValueError(f"DEVICE must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={device!r} requested but no CUDA GPU is visible; use 'auto'")
    return device


def package_versions(names: tuple[str, ...] = BANNER_PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def setup(
    stage: str,
    profile: str = "smoke",
    seed: int = 0,
    device: str = "auto",
    force: bool = False,
    overrides: dict | None = None,
    quiet: bool = False,
) -> Context:
    """Seed, build the frozen config, resolve the device, make folders, print a banner."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    cfg = get_config(profile, seed, **(overrides or {}))
    prerequisites.check(stage, profile)  # one sentence naming the notebooks to run first
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout
    )
    logging.getLogger("gemkr").setLevel(logging.INFO)  # the kit's own messages; libraries warn
    seed_everything(cfg.seed)
    ctx = Context(
        stage=stage,
        cfg=cfg,
        device=resolve_device(device),
        force=bool(force),
        rng=stage_rng(cfg.seed, int(stage[:2])),
        artifacts=artifacts_dir(profile, stage),
        results=results_dir(profile),
        figures=figures_dir(profile),
    )
    artifacts.clean_stale_temps(ctx.artifacts)
    plots.set_theme()
    progress.silence_library_bars()  # under TQDM_DISABLE (run_all.sh): no library's bars either
    if not quiet:
        print(banner(ctx))
    return ctx


# what a run itself writes into tracked folders: not an edit of the code it ran
RUN_OUTPUTS = ("results", "figures", "logs")


def source_dirty() -> bool | None:
    """Whether tracked files outside the run's own outputs (`RUN_OUTPUTS`) differ from HEAD, as
    the manifest's flag taken before the run (None without git). A notebook's banner asked plain
    ``git status`` and said "(dirty)" as soon as an earlier notebook of the same run had
    rewritten its tables."""
    import subprocess

    from .paths import REPO_ROOT

    spec = [f":(exclude){p}" for p in RUN_OUTPUTS]
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                              *spec], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.strip())


def banner(ctx: Context) -> str:
    git = {**artifacts.git_state(), "dirty": source_dirty()}
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    lines = [
        f"GeMKR kit · stage {ctx.stage} · profile {ctx.profile} · seed {ctx.cfg.seed} · "
        f"device {ctx.device}",
        f"commit {str(git['commit'])[:10]}{' (dirty)' if git['dirty'] else ''} · {versions}",
        f"artifacts -> {rel(ctx.artifacts)}",
        f"results   -> {rel(ctx.results)}",
        f"figures   -> {rel(ctx.figures)}",
    ]
    if ctx.profile != "paper":
        lines.append(
            "NOTE: built-in benchmark and small models: these are not the paper's results."
        )
    return "\n".join(lines)
