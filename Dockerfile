# pushgate: a slim image that runs one node (or a supervisor of workers with --workers).
# Not built on the development machine (no Docker engine there); kept minimal and conventional.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY pushgate ./pushgate
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /app pushgate

USER pushgate
EXPOSE 8000
# configuration comes from a mounted file and PUSHGATE_* environment variables
ENV PUSHGATE_SERVER_HOST=0.0.0.0
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)" || exit 1
ENTRYPOINT ["pushgate", "serve"]
CMD ["--config", "/etc/pushgate/pushgate.toml"]
