# One image for every pipeline task: `python -m container_component_src.main <step>`.
# Build: docker build -t <registry>/eclss-anomaly-pipeline:<tag> .

FROM python:3.11-slim AS build
RUN pip install --no-cache-dir "poetry>=2.2,<3"
WORKDIR /app
ENV POETRY_NO_INTERACTION=1 POETRY_VIRTUALENVS_IN_PROJECT=true POETRY_CACHE_DIR=/tmp/poetry-cache
# Dependencies first, from the lock, so that a code change reuses this layer.
COPY pyproject.toml poetry.lock poetry.toml README.md ./
RUN poetry install --only main --no-root && rm -rf /tmp/poetry-cache
COPY container_component_src ./container_component_src
COPY pipeline ./pipeline
# The project itself as a regular (not editable) package of the environment.
RUN poetry build --format wheel && .venv/bin/python -m pip install --no-cache-dir --no-deps dist/*.whl

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
