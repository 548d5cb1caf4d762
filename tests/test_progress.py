"""`progress.hidden`: TQDM_DISABLE wins over a call site's own `disable=False`."""

from gemkr.progress import hidden


def test_hidden_follows_the_caller_and_the_environment(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert hidden(True) and not hidden(False)
    for on in ("1", "true", "YES"):
        monkeypatch.setenv("TQDM_DISABLE", on)
        assert hidden(False)
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not hidden(False) and hidden(True)


def test_bar_is_hidden_under_tqdm_disable(monkeypatch):
    from gemkr.progress import bar

    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert bar(range(3), disable=False).disable and list(bar(range(3))) == [0, 1, 2]
    monkeypatch.delenv("TQDM_DISABLE")
    assert not bar(range(3)).disable and bar(range(3), disable=True).disable


def test_library_bars_are_forced_off_only_under_tqdm_disable(monkeypatch):
    from tqdm import notebook
    from ultralytics.utils.tqdm import TQDM

    from gemkr import detect
    from gemkr.progress import silence_library_bars

    for cls in (notebook.tqdm_notebook, TQDM):  # unwrapped here (an earlier test under
        # TQDM_DISABLE may have forced them off in this process), restored after the test
        monkeypatch.setattr(cls, "__init__", getattr(cls.__init__, "_gemkr_original",
                                                     cls.__init__))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    silence_library_bars()
    detect._offline_ultralytics()
    assert not TQDM(range(3), disable=False).disable, "interactive runs keep their bars"
    monkeypatch.setenv("TQDM_DISABLE", "1")
    silence_library_bars()
    silence_library_bars()  # twice: wrapped once
    detect._offline_ultralytics()
    bar = TQDM(range(3), disable=False)  # as ultralytics' image cache calls it
    assert bar.disable and list(bar) == [0, 1, 2]
    assert not hasattr(notebook.tqdm_notebook.__init__._gemkr_original, "_gemkr_original")
    assert notebook.tqdm_notebook(range(2), disable=False).disable
