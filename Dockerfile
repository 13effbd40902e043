# One image for every pipeline task: `python -m container_component_src.main <step>`.
# Build: docker build -t <registry>/eclss-anomaly-pipeline:<tag> .

FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.13.*
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
# Dependencies first, so that a code change reuses this layer.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY container_component_src ./container_component_src
COPY pipeline ./pipeline
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin eclss
COPY --from=build /app/.venv /app/.venv
COPY config.toml /app/config.toml
ENV PATH=/app/.venv/bin:$PATH \
    ECLSS_CONFIG=/app/config.toml \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 1000
CMD ["python", "-m", "container_component_src.main", "--help"]
