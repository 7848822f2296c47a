# syntax=docker/dockerfile:1
# stream-infer worker images, from one build of the wheel:
#   docker build -t stream-infer:0.1.0 .                    # CPU (onnxruntime): target runtime
#   docker build --target gpu -t stream-infer:0.1.0-gpu .   # NVIDIA CUDA + cuDNN (onnxruntime-gpu)
# Add `--build-arg EXTRAS=demo` for `stream-infer produce --demo` (scikit-learn's dataset);
# docker-compose.yml does. Both run as uid 10001 with HOME=/home/stream-infer, and take
# `run --config FILE` (or any other subcommand) as arguments.

ARG PYTHON_IMAGE=python:3.12-slim
# Must carry the CUDA major version that onnxruntime-gpu links against (CUDA 13 for the
# releases current in 2026): the gpu stage checks it with ldd and fails the build otherwise.
# GPU nodes need a driver that supports that CUDA version.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# -- builder: the wheel, and each image's requirements read from pyproject.toml --------
FROM ${PYTHON_IMAGE} AS builder
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stream_infer ./stream_infer
COPY deploy/kafka ./deploy/kafka
COPY topics ./topics
COPY deploy/docker/requirements.py ./
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
 && extras="" && for e in ${EXTRAS}; do extras="$extras --extra $e"; done \
 && python requirements.py cpu $extras > /dist/requirements-cpu.txt \
 && python requirements.py gpu $extras > /dist/requirements-gpu.txt

# -- gpu: NVIDIA CUDA runtime with cuDNN, onnxruntime-gpu ----------------------------
FROM ${CUDA_IMAGE} AS gpu
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/stream-infer \
    STREAM_INFER_CACHE_DIR=/home/stream-infer/.cache/stream-infer
# Ubuntu 24.04's Python is 3.12, like the CPU image's; a venv keeps pip off the system's.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && groupadd --gid 10001 stream-infer \
 && useradd --uid 10001 --gid 10001 --home-dir /home/stream-infer --create-home \
      --shell /usr/sbin/nologin stream-infer
RUN --mount=type=bind,from=builder,source=/dist,target=/dist \
    pip install --requirement /dist/requirements-gpu.txt \
 && pip install --no-deps /dist/*.whl
# onnxruntime-gpu lists CUDA even where its libraries are missing, and then runs on CPU: a
# base image without the CUDA and cuDNN libraries it needs is a build error instead.
# libcuda.so.1 is the driver's, mounted at run time by the NVIDIA container toolkit.
RUN set -e; \
    lib="$(python -c 'import onnxruntime, pathlib; \
print(pathlib.Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so")')"; \
    missing="$(ldd "$lib" | grep 'not found' | grep -v 'libcuda[.]so' || true)"; \
    if [ -n "$missing" ]; then echo "CUDA_IMAGE lacks: $missing" >&2; exit 1; fi; \
    if ! ldconfig -p | grep -q 'libcudnn[.]so[.]9'; then echo "CUDA_IMAGE lacks cuDNN 9" >&2; exit 1; fi
WORKDIR /app
COPY models ./models
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["stream-infer"]
CMD ["run"]

# -- runtime: slim CPU image (onnxruntime); last, so the default target --------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/home/stream-infer \
    STREAM_INFER_CACHE_DIR=/home/stream-infer/.cache/stream-infer
# A real home folder: ~/.cache must be writable (TensorRT engines, Kafka jars for `broker`).
RUN groupadd --gid 10001 stream-infer \
 && useradd --uid 10001 --gid 10001 --home-dir /home/stream-infer --create-home \
      --shell /usr/sbin/nologin stream-infer
RUN --mount=type=bind,from=builder,source=/dist,target=/dist \
    pip install --requirement /dist/requirements-cpu.txt \
 && pip install --no-deps /dist/*.whl
WORKDIR /app
# The demo model; mount or bake your own and point model.path at it.
COPY models ./models
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["stream-infer"]
CMD ["run"]
