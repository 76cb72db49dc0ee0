# The gateway (default command) and the standalone key service (`keyservice serve`) in one image, run as the
# unprivileged user s3gw (uid 10001). Health: the admin listener's /health/live (GATEWAY_ADMIN_LISTEN for the
# gateway; a key service container sets HEALTH_URL to its KEYSERVICE_ADMIN_LISTEN's, as
# config/docker-compose.minio.yml does).
FROM python:3.11.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY common ./common
COPY gateway ./gateway
COPY keyservice ./keyservice
COPY config ./config
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home /var/lib/s3gw s3gw \
    && mkdir -p /var/lib/s3gw /etc/s3gw \
    && chown s3gw /var/lib/s3gw /etc/s3gw \
    && chmod 0700 /var/lib/s3gw /etc/s3gw
USER s3gw
ENV GATEWAY_LISTEN=0.0.0.0:8080 GATEWAY_DATA_DIR=/var/lib/s3gw \
    GATEWAY_ADMIN_LISTEN=0.0.0.0:9091 KEYSERVICE_ADMIN_LISTEN=0.0.0.0:9092 \
    HEALTH_URL=http://127.0.0.1:9091/health/live
EXPOSE 8080 9091
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTH_URL'], timeout=4)"]
ENTRYPOINT ["gateway", "serve"]
