# One image for every stream-monitor command (monitor, trainer, replay, ...):
#   docker build -t stream-monitor .
#   docker run --rm stream-monitor monitor --config /app/configs/monitor.yaml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package build needs, so caches and .git in the build context stay out.
COPY pyproject.toml README.md /tmp/src/
COPY stream_monitor /tmp/src/stream_monitor
RUN pip install /tmp/src && rm -rf /tmp/src

# Default settings inside the image; docker-compose.yml mounts the repo's files over them.
COPY configs ./configs

# Non-root. /data holds the trainer's model registry (a volume in docker-compose.yml);
# it is created here so a new named volume inherits this owner.
RUN useradd --system --uid 10001 --no-create-home --home-dir /app app \
    && mkdir -p /data \
    && chown app /data
USER app

EXPOSE 9108 9109
ENTRYPOINT ["stream-monitor"]
CMD ["--help"]
