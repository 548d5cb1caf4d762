"""Foundation: config, atomic artifacts, cache keys, figures, offline guarantees, run_all checks."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gemkr
import gemkr.notebooks
from gemkr import artifacts, io, plots
from gemkr.config import PROFILE_NAMES, PROFILES, ConfigError, get_config

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------ config
def test_every_profile_builds_and_is_frozen():
    for name in PROFILE_NAMES:
        cfg = get_config(name, seed=3)
        assert cfg.profile == name and cfg.seed == 3
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.seed = 4  # type: ignore[misc]
        assert all(doc for _, _, doc in cfg.describe()), "every field has a docstring"


def test_unknown_profile_and_override_are_errors():
    with pytest.raises(ConfigError, match="unknown profile 'nonsense'"):
        get_config("nonsense")
    with pytest.raises(ConfigError, match="unknown setting 'n_scene'"):
        get_config("smoke", n_scene=3)
    with pytest.raises(ConfigError, match="expects int"):
        get_config("smoke", image_size="big")
    assert get_config("smoke", image_size=96).image_size == 96


def test_paper_values_in_presets():
    # paper-notes §6, §11.4: LoRA r 8 / alpha 16 / dropout 0.05; 10 groups, 0.5, 1.5, 9 tokens.
    for cfg in PROFILES.values():
        assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (8, 16, 0.05)
        assert (cfg.num_beam_groups, cfg.diversity_penalty, cfg.length_penalty) == (10, 0.5, 1.5)
        assert cfg.clue_max_tokens == 9 and cfg.prefix_len == 10 and cfg.max_objects == 10


def test_import_gemkr_is_light_and_sets_offline_env():
    code = (
        "import sys, os, gemkr\n"
        "print(sorted(m for m in ('torch', 'numpy', 'pandas') if m in sys.modules))\n"
        "print(os.environ['HF_HUB_OFFLINE'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"},
        check=True,
    ).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "1"


# --------------------------------------------------------------------------------------- artifacts
def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    artifacts.atomic_write(target, "old")
    with pytest.raises(RuntimeError), artifacts.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_stage_cache_valid_only_after_complete_write(tmp_path):
    cache = artifacts.StageCache(tmp_path, "thing", key="k1")
    assert not cache.valid
    with pytest.raises(RuntimeError), cache.writing() as d:
        (d / "part.npy").write_bytes(b"123")
        raise RuntimeError("interrupted")
    assert not cache.valid and not cache.path.exists()
    assert not any(tmp_path.iterdir()), "the temp folder of an interrupted write is removed"
    with cache.writing(n=1) as d:
        (d / "x.txt").write_text("done")
    assert cache.valid and (cache.path / "x.txt").read_text() == "done"
    assert not artifacts.StageCache(tmp_path, "thing", key="k2").valid, "new key invalidates"
    assert not artifacts.StageCache(tmp_path, "thing", key="k1", force=True).valid
    # rewriting replaces the folder whole
    with artifacts.StageCache(tmp_path, "thing", key="k2").writing() as d:
        (d / "y.txt").write_text("new")
    assert sorted(p.name for p in cache.path.iterdir()) == ["_meta.json", "y.txt"]


def test_cache_key_depends_on_every_part():
    base = artifacts.cache_key({"a": 1}, "up")
    assert base == artifacts.cache_key({"a": 1}, "up")
    assert base != artifacts.cache_key({"a": 2}, "up") != artifacts.cache_key({"a": 1}, "up2")


def test_figures_are_byte_stable_and_named(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plots, "figures_dir", lambda profile: tmp_path)
    monkeypatch.setattr(plots, "record_output", lambda *a, **k: None)
    digests = []
    for _ in range(2):
        plots.set_theme()
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        png, pdf = plots.save_figure(fig, "99_test", "smoke")
        digests.append((artifacts.sha256_file(png), artifacts.sha256_file(pdf)))
        plt.close(fig)
    assert digests[0] == digests[1]
    with pytest.raises(ValueError):
        io.save_figure(None, "bad name", "smoke")


def test_show_figure_displays_in_a_kernel_only(monkeypatch):
    """Executed notebooks run under Agg: the figure must be displayed explicitly (PNG + caption)
    and closed, so an inline backend does not draw it twice; outside a kernel, nothing."""
    import IPython
    import IPython.display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    io.show_figure(fig, "what to look at")  # no kernel: nothing shown, the figure stays open
    assert shown == [] and plt.fignum_exists(fig.number)

    monkeypatch.setattr(IPython, "get_ipython", lambda: type("Shell", (), {"kernel": object()})())
    io.show_figure(fig, "what to look at")
    png, caption = shown
    assert isinstance(png, IPython.display.Image) and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert caption.data == "*what to look at*"
    assert not plt.fignum_exists(fig.number)


# ------------------------------------------------------------------------------------------ network
def test_test_process_has_no_network():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    with pytest.raises(Exception) as info:
        s.connect(("93.184.216.34", 80))
    s.close()
    assert "Socket" in type(info.value).__name__ or "blocked" in str(info.value).lower()


def test_notebook_kernels_have_no_network():
    """Kernels are separate processes: `import gemkr` blocks them via GEMKR_BLOCK_NETWORK=1."""
    code = (
        "import socket, gemkr\ns = socket.socket()\ntry:\n    s.connect(('93.184.216.34', 80))\n"
        "except gemkr.offline.NetworkBlockedError:\n    print('blocked')\n"
    )
    env = {**os.environ, "GEMKR_BLOCK_NETWORK": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert out.stdout.strip() == "blocked", out.stderr
    assert os.environ.get("GEMKR_BLOCK_NETWORK") == "1", "conftest exports it to the kernels"


# ------------------------------------------------------------------------------------------ run_all
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--profile", "nonsense"], "unknown profile 'nonsense'"),
        (["-p", "NO_SUCH_PARAM", "1"], "unknown parameter 'NO_SUCH_PARAM'"),
        (["-p", "SEED", "abc"], "expects int"),
        (["--only", "42"], "no such notebook"),
    ],
)
def test_run_all_rejects_bad_arguments_fast(argv, message):
    start = time.perf_counter()
    out = subprocess.run(
        ["bash", "run_all.sh", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert message in out.stderr
    assert "running" not in out.stdout and time.perf_counter() - start < 15


def test_run_all_dry_run_lists_every_notebook_in_order():
    out = subprocess.run(
        [sys.executable, "tools/run_all.py", "--profile", "smoke", "--dry-run", "--force"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    names = [ln.split()[1].rstrip(":") for ln in out.stdout.splitlines() if ln.startswith("== ")]
    assert names == list(gemkr.notebooks.NOTEBOOKS)
    assert all('"PROFILE": "smoke"' in ln for ln in out.stdout.splitlines() if ln.startswith("=="))


def test_manifest_and_outputs_are_json(tmp_path):
    path = artifacts.write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
