"""One figure style and byte-stable saving (style guide §7): PNG (dpi 200) + PDF per figure."""

from __future__ import annotations

import io
from pathlib import Path

from .artifacts import atomic_write, record_output
from .paths import figures_dir


def set_theme() -> None:
    """seaborn `paper` context, `whitegrid`, `colorblind` palette; TrueType fonts in PDFs."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")
    mpl.rcParams.update(
        {
            "pdf.fonttype": 42,
            "ps.fonttype": 42,
            "figure.dpi": 100,
            "savefig.bbox": "tight",
            "svg.hashsalt": "gemkr",
        }
    )


def save_figure(fig, name: str, profile: str, stage: str | None = None) -> list[Path]:
    """Save `fig` as ``figures/<profile>/<name>.png`` and ``.pdf``; return both paths.

    Non-`paper` figures carry the profile in a footer, so nobody mistakes them for paper results.
    PDF metadata has no creation date, so the same figure gives the same bytes.
    """
    if not name or "/" in name or " " in name or "." in name:
        raise ValueError(f"figure name {name!r} must be a bare snake_case stem like '06_ablations'")
    note = f"profile: {profile} (built-in benchmark, not the paper's numbers)"
    if profile != "paper" and not any(t.get_text() == note for t in fig.texts):
        # a footer below the axes: never covers a title; bbox_inches="tight" keeps it in view
        fig.text(0.5, -0.03, note, ha="center", va="top", fontsize=7, color="0.35")
    paths = []
    for ext, kwargs in (
        ("png", {"dpi": 200, "metadata": {"Software": None}}),
        ("pdf", {"metadata": {"CreationDate": None, "Producer": None}}),
    ):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, **kwargs)
        path = atomic_write(figures_dir(profile) / f"{name}.{ext}", buf.getvalue())
        record_output(profile, stage or name[:2], path)
        paths.append(path)
    return paths


def image_grid(n: int, ncols: int, cell: tuple[float, float]):
    """A figure of `n` image panels in rows of `ncols` (axes off); returns (fig, the n axes)."""
    import matplotlib.pyplot as plt
    import numpy as np

    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell[0] * ncols, cell[1] * nrows))
    axes = list(np.ravel(axes))
    for ax in axes:
        ax.axis("off")
    return fig, axes[:n]
