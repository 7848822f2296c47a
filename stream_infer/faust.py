"""stream-infer's pipeline for your own Faust agents.

``Pipeline.from_config(path)`` loads the model named in a stream-infer
configuration file; ``await pipeline.process(events)`` returns, for each event
of a ``noack_take`` batch and in order, a :class:`Prediction` (send it to your
output topic) or a :class:`DeadLetter` (send it to your dead-letter topic).
Acknowledge the events once those sends are delivered: that is what keeps the
at-least-once guarantee of ``stream-infer run``. See the README ("Inside your
own Faust app") for a complete agent.
"""

from stream_infer.runtimes.faust.pipeline import DeadLetter, Pipeline, Prediction, Result

__all__ = ["DeadLetter", "Pipeline", "Prediction", "Result"]
