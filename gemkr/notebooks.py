"""Reading notebooks without running them: the `parameters` cell, forbidden patterns.

Used by run_all.sh's preflight (reject unknown parameters before anything runs; papermill itself
only warns) and by the static notebook tests. Standard library only, so it works before the
environment is installed.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# The run order; run_all.sh passes the same list explicitly (never a glob).
NOTEBOOKS = (
    "01_data_prep",
    "02_detection",
    "03_index",
    "04_training",
    "05_evaluation",
    "06_ablations",
    "07_modality_keywords",
    "08_case_studies",
    "09_your_data",
)


@dataclass(frozen=True)
class Parameter:
    name: str
    annotation: str  # "int", "str", "bool", "float", "int | None", ...
    default: Any

    def parse(self, text: str) -> Any:
        """Convert a command-line string to this parameter's type, or raise ValueError."""
        kinds = [k.strip() for k in self.annotation.split("|")]
        if "None" in kinds and text in ("None", "none", "null"):
            return None
        for kind in kinds:
            if kind == "bool" and text in ("True", "true", "1", "False", "false", "0"):
                return text in ("True", "true", "1")
            if kind == "int":
                try:
                    return int(text)
                except ValueError:
                    pass
            if kind == "float":
                try:
                    return float(text)
                except ValueError:
                    pass
            if kind == "str":
                return text
        raise ValueError(f"parameter {self.name} expects {self.annotation}, got {text!r}")


def load(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def parameters_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]


def read_parameters(path: str | Path) -> dict[str, Parameter]:
    """The annotated literal assignments of the notebook's single `parameters` cell.

    Raises ValueError when there is not exactly one such cell, or when it holds anything but
    ``NAME: type = literal`` lines (papermill would not recompute derived values).
    """
    nb = load(path)
    cells = parameters_cells(nb)
    if len(cells) != 1:
        raise ValueError(f"{path}: expected one cell tagged 'parameters', found {len(cells)}")
    out: dict[str, Parameter] = {}
    for node in ast.parse(source(cells[0])).body:
        if not (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.value is not None
        ):
            raise ValueError(
                f"{path}: parameters cell line {node.lineno} is not 'NAME: type = literal'"
            )
        try:
            value = ast.literal_eval(node.value)
        except ValueError as err:
            raise ValueError(f"{path}: parameter {node.target.id} is not a literal") from err
        out[node.target.id] = Parameter(node.target.id, ast.unparse(node.annotation), value)
    return out


def notebook_path(stem: str) -> Path:
    return NOTEBOOK_DIR / f"{stem}.ipynb"
