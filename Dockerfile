# The delegation worker. The LLM runs as its own service (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 LITELLM_LOCAL_MODEL_COST_MAP=True
COPY pyproject.toml README.md ./
COPY delegation delegation
RUN pip install --no-cache-dir .
RUN useradd --create-home --uid 10001 delegation && mkdir -p /app/data /app/logs && chown -R delegation /app
USER delegation
CMD ["python", "-m", "delegation.worker"]
