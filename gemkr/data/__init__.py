"""Built-in OKMoji benchmark, knowledge bases and loaders of the paper datasets."""

from .benchmark import Benchmark, build_benchmark, load_benchmark  # noqa: E402

__all__ = ["Benchmark", "build_benchmark", "load_benchmark"]
