"""Saving results: every table, metrics file and figure goes through here (style guide §7).

Names follow ``NN_<what>[_<variant>]``: the stage number first, lowercase snake case, no values.
Each save prints the path and records it (sha256) in ``results/<profile>/outputs.json``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import artifacts, plots
from .paths import rel, results_dir

_NAME = re.compile(r"^\d{2}[a-z]?_[a-z0-9_]+$|^bench_[a-z0-9_]+$")


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"output name {name!r} must look like '05_main_results' or 'bench_index'")


def save_table(df: Any, name: str, profile: str, markdown: bool = False) -> Path:
    """Write `df` to ``results/<profile>/<name>.csv`` (and ``.md`` when `markdown`)."""
    _check_name(name)
    path = artifacts.write_csv(df, results_dir(profile) / f"{name}.csv")
    artifacts.record_output(profile, name[:2], path, rows=len(df))
    print(f"saved {rel(path)}  ({len(df)} rows)")
    if markdown:
        md = artifacts.atomic_write(
            results_dir(profile) / f"{name}.md", df.to_markdown(index=False, floatfmt=".4f") + "\n"
        )
        artifacts.record_output(profile, name[:2], md)
    return path


def save_json(obj: Any, name: str, profile: str) -> Path:
    """Write scalars to ``results/<profile>/<name>.json`` (sorted keys)."""
    _check_name(name)
    path = artifacts.write_json(results_dir(profile) / f"{name}.json", obj)
    artifacts.record_output(profile, name[:2], path)
    print(f"saved {rel(path)}")
    return path


def save_figure(fig: Any, name: str, profile: str) -> list[Path]:
    """Save a matplotlib figure as PNG + PDF under ``figures/<profile>/`` (shown or not)."""
    _check_name(name)
    paths = plots.save_figure(fig, name, profile)
    for p in paths:
        print(f"saved {rel(p)}")
    return paths


def show_figure(fig: Any, caption: str) -> None:
    """Show `fig` in the notebook where it is made, with `caption` (what to look at) below it.

    Shown explicitly, not left to the backend: ``run_all.sh`` executes the notebooks with the
    non-interactive Agg backend (byte-stable files), under which no figure would appear in the
    executed copies. Outside a Jupyter kernel (scripts, tests) nothing is displayed. Inside one,
    the figure is then closed, so an inline backend does not draw it a second time at the end
    of the cell; `save_figure` still writes a closed figure."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, Markdown, display
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return
    import io as _io

    import matplotlib.pyplot as plt

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    display(Image(data=buf.getvalue()))
    display(Markdown(f"*{caption}*"))
    plt.close(fig)


# What an executed notebook must not hold: a reader of the committed copy (GitHub, JupyterLab
# without a kernel) sees frozen widgets, escape codes and memory addresses as noise.
_NOISE = {
    "ANSI escape codes": re.compile(r"\x1b\["),
    "carriage-return progress": re.compile(r"\r(?!\n)"),
    "DEBUG log lines": re.compile(r"^DEBUG\b", re.MULTILINE),
    "object reprs": re.compile(r"<[\w.]+ (object )?at 0x[0-9a-f]+>"),
}


def output_noise(notebook: str | Path) -> list[str]:
    """``"cell N: <kind>"`` for each code cell of an executed notebook whose outputs hold
    progress widgets, ANSI escapes, carriage-return progress lines, DEBUG log lines or object
    reprs (one entry per cell and kind); [] for a clean notebook."""
    import json

    found = []
    cells = json.loads(Path(notebook).read_text())["cells"]
    for i, cell in enumerate(cells):
        kinds: set[str] = set()
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                kinds.add("progress or other widgets")
            text = "".join(out.get("text", "")) + "".join(data.get("text/plain", ""))
            kinds |= {k for k, pattern in _NOISE.items() if pattern.search(text)}
        found += [f"cell {i}: {k}" for k in sorted(kinds)]
    return found
