# syntax=docker/dockerfile:1
# The worker's image: dependencies installed into a virtual environment in a build stage, copied
# into a runtime stage that has no build tools, run as a system user. SIGTERM reaches the worker
# (exec-form entrypoint, no shell in between), which then drains gracefully.
#
#   docker build -t sqs-event-worker .
#   docker run --rm -e WORKER_QUEUE_URL=... -e WORKER_HANDLER=... sqs-event-worker
#
# To add your handlers, build FROM this image and COPY them in (docs/deployment.md, "The image").

# A pinned tag, overridable for a mirrored or newer base (--build-arg PYTHON_IMAGE=...).
# checkov cannot resolve an ARG in FROM and would report an unpinned image:
#checkov:skip=CKV_DOCKER_7:the base image is the pinned tag in ARG PYTHON_IMAGE, which checkov does not resolve
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/worker
COPY pyproject.toml README.md ./
COPY worker ./worker
RUN /opt/worker/bin/pip install --no-compile . \
 && /opt/worker/bin/python -m compileall -q /opt/worker

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sqs-event-worker" \
      org.opencontainers.image.description="An SQS consumer that stands in for AWS Lambda" \
      org.opencontainers.image.licenses="Apache-2.0"
# Handlers copied into /app (FROM this image, COPY handlers/ /app/) import without more ado.
ENV PATH=/opt/worker/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WORKER_HTTP_PORT=8080
RUN groupadd --gid 10001 worker \
 && useradd --no-log-init --uid 10001 --gid worker --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin worker
COPY --from=build /opt/worker /opt/worker
WORKDIR /app
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["worker", "healthcheck"]
ENTRYPOINT ["worker"]
CMD ["run"]
# Smoke check: the package imports in the final image, as the user it runs as.
RUN ["python3", "-Ic", "import worker, worker.ops.cli; print('worker', worker.__version__)"]
