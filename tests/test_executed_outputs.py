"""Executed notebooks without noise (`gemkr.io.output_noise`): no progress widgets, ANSI escapes,
carriage-return progress lines, DEBUG lines or object reprs. The scanner on a made-up notebook,
and on the committed `default` run (any noise it holds must be listed below, so none can slip in
unnoticed). `test_run_all_resume` scans the `smoke` run it makes."""

import json

import pytest

from gemkr.io import output_noise
from gemkr.paths import REPO_ROOT

# The committed run's copies hold no noise (an entry here would name one that does).
NOISE_IN_COMMITTED_RUN: dict[str, list[str]] = {}


def _notebook(tmp_path, outputs):
    nb = {"cells": [{"cell_type": "markdown", "source": "# t", "metadata": {}},
                    {"cell_type": "code", "source": "x", "metadata": {}, "outputs": outputs}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    return path


@pytest.mark.parametrize(("output", "kind"), [
    ({"output_type": "stream", "name": "stderr", "text": "\x1b[34mtrain: \x1b[0m 5%"},
     "ANSI escape codes"),
    ({"output_type": "stream", "name": "stderr", "text": "10%|#  | 1/10\r20%|## | 2/10"},
     "carriage-return progress"),
    ({"output_type": "stream", "name": "stdout", "text": "ok\nDEBUG bm25s: tokenizing\n"},
     "DEBUG log lines"),
    ({"output_type": "execute_result", "execution_count": 1, "metadata": {},
      "data": {"text/plain": "<pandas.io.formats.style.Styler at 0x7f3a2c1d9e50>"}},
     "object reprs"),
    ({"output_type": "display_data", "metadata": {},
      "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "a"},
               "text/plain": "Loading weights:   0%|"}}, "progress or other widgets"),
])
def test_each_kind_of_noise_is_found(tmp_path, output, kind):
    assert output_noise(_notebook(tmp_path, [output])) == [f"cell 1: {kind}"]


def test_clean_outputs_pass(tmp_path):
    clean = [{"output_type": "stream", "name": "stdout", "text": "saved results/x.csv\r\n"},
             {"output_type": "execute_result", "execution_count": 1, "metadata": {},
              "data": {"text/plain": "   a  b\n0  1  2", "text/html": "<table></table>"}}]
    assert output_noise(_notebook(tmp_path, clean)) == []


def test_committed_default_notebooks_hold_only_the_listed_noise():
    found = {p.stem: output_noise(p) for p in
             sorted((REPO_ROOT / "results" / "default" / "executed").glob("*.ipynb"))}
    assert len(found) == 9
    assert {k: v for k, v in found.items() if v} == NOISE_IN_COMMITTED_RUN
