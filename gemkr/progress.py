"""Progress bars that respect ``TQDM_DISABLE`` even where a call site switches them off itself.

tqdm reads ``TQDM_DISABLE`` only as a default: an explicit ``disable=False`` wins over it,
so ``run_all.sh`` (which sets it to keep the executed notebooks free of frozen widgets) would
still get the bars of every loop that passes its own ``disable``. Such loops ask `hidden`.
"""

from __future__ import annotations

import os


def hidden(disable: bool = False) -> bool:
    """True when a progress bar should not show: the caller says so, or ``TQDM_DISABLE`` is set."""
    return bool(disable) or os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true",
                                                                                     "yes")


def bar(iterable=None, *, disable: bool = False, **kwargs):
    """``tqdm.auto.tqdm`` (a widget in Jupyter, text elsewhere) that stays hidden under
    ``TQDM_DISABLE``: tqdm's notebook bar turns a missing ``disable`` into an explicit False,
    so there the variable alone would change nothing."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=hidden(disable), **kwargs)


def force_off(cls) -> None:
    """Under ``TQDM_DISABLE``, make `cls` (a library's progress-bar class) start disabled
    whatever its caller passes (ultralytics' image cache passes ``disable=False`` and prints
    ANSI escapes into the notebook: `detect` calls this). A no-op without the variable."""
    if not hidden():
        return
    init = cls.__init__
    if getattr(init, "_gemkr_forced_off", False):
        return

    def forced(self, *args, **kwargs):
        kwargs["disable"] = True
        init(self, *args, **kwargs)

    forced._gemkr_forced_off = True
    forced._gemkr_original = init
    cls.__init__ = forced


def silence_library_bars() -> None:
    """Under ``TQDM_DISABLE``, also hide the notebook widgets libraries open themselves
    (transformers' GGUF loader, the benchmark's scene renderer): tqdm's notebook bar treats a
    missing ``disable`` as False. Called by `gemkr.setup`; a no-op without the variable, so
    interactive runs keep their bars."""
    from tqdm import notebook

    force_off(notebook.tqdm_notebook)
