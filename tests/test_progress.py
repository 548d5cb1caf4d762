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
