"""The Faust runtime: the shared pipeline inside a Faust (faust-streaming) agent.

``FaustWorker`` is ``stream-infer run --runtime faust``; ``Pipeline`` is the
part a Faust user calls from an agent of their own (see ``stream_infer.faust``).
"""

from stream_infer.runtimes.faust.pipeline import DeadLetter, Pipeline, Prediction, Result
from stream_infer.runtimes.faust.worker import FaustWorker

__all__ = ["DeadLetter", "FaustWorker", "Pipeline", "Prediction", "Result"]
