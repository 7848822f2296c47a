"""Arrays and bytes in, arrays and bytes out: decoding, the ONNX model, output envelopes.

Nothing here imports from ``kafka`` or ``runtimes``: records come in through the
small ``envelope.SourceRecord`` protocol, so every runtime shares this code.
"""
