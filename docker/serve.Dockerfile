# syntax=docker/dockerfile:1
# `torchport serve` in a container: the Open Inference Protocol v2 on port 8080 for the bundle at /mnt/models, where
# KServe's storage initializer puts it (`torchport package --to kserve` writes the runtime that uses this image).
#
#   docker build -f docker/serve.Dockerfile -t torchport-serve .
#   docker run --rm -p 8080:8080 -v "$PWD/runs/digits/bundle":/mnt/models:ro torchport-serve
#
# The RUN steps live in docker/build-steps.sh: tests/package/test_docker.py runs them for real in a fresh venv,
# starts this CMD and runs this HEALTHCHECK (no Docker engine is needed for that).
FROM python:3.11-slim

# torch from PyTorch's CPU index: the server runs ONNX Runtime on the CPU; PyPI's CUDA wheels would add ~3 GB
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /opt/torchport
COPY pyproject.toml README.md ./
COPY src ./src
COPY docker/build-steps.sh ./docker/
RUN sh docker/build-steps.sh /opt/torchport /opt/venv "$TORCH_INDEX_URL"

ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/tmp
USER 65532:65532
EXPOSE 8080
# ready: every model loaded and warmed (a 503 until then, so the container is "starting", then "healthy")
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=2)"]
ENTRYPOINT ["torchport"]
CMD ["serve", "/mnt/models", "--host", "0.0.0.0", "--port", "8080"]
