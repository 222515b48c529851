# Slim image running the gateway only (no torch): `docker build -t tiergate . && docker run -p 8080:8080 \
#   -e TIERGATE_ADMIN_KEY=... -e OPENAI_API_KEY=... -v $PWD/configs:/app/configs tiergate`
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY router ./router
COPY compiler ./compiler
RUN pip install --no-cache-dir --upgrade pip && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 tiergate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY configs ./configs
RUN mkdir -p /app/data && chown tiergate /app/data
USER tiergate
# the default store, sqlite:///tiergate.db, lands in the writable data folder (mount a volume there)
WORKDIR /app/data
ENV TIERGATE_CONFIG=/app/configs/tiergate.yaml \
    PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz')" || exit 1
# 0.0.0.0 needs TIERGATE_ADMIN_KEY: without it the gateway binds to loopback only, by design.
CMD ["tiergate", "serve", "--host", "0.0.0.0", "--port", "8080"]
