"""``stream-infer bench``: the worker against hand-written loops, each in its own process.

Rooms: ``runner`` (the command: plan, progress, results), ``harness`` (topics,
processes, catch-up windows, latency sessions), ``contenders`` (what runs, as
command lines), ``loops``/``faust_agent``/``openloop`` (the processes it starts
besides the worker), ``pacer`` and ``stats`` (the method, pure and unit-tested),
``report``, ``machine`` and ``profile``.
"""

from stream_infer.tools.bench.contenders import CONTENDERS, parse_contenders
from stream_infer.tools.bench.runner import BenchOptions, run_bench

__all__ = ["CONTENDERS", "BenchOptions", "parse_contenders", "run_bench"]
