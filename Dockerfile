# stream-infer worker image. On linux/amd64 it carries onnxruntime-gpu: with the NVIDIA
# container runtime the worker runs on CUDA/TensorRT, without it on CPU (model.device: auto).
FROM python:3.12-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream_infer ./stream_infer
COPY deploy/kafka ./deploy/kafka
COPY topics ./topics
COPY models ./models
RUN pip install --no-cache-dir ".[demo]" && useradd --uid 10001 --no-create-home stream-infer

USER 10001
EXPOSE 8000
ENTRYPOINT ["stream-infer"]
CMD ["run"]
