FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY keyservice ./keyservice
COPY config ./config
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/s3gw s3gw && mkdir -p /var/lib/s3gw && chown s3gw /var/lib/s3gw
USER s3gw
ENV GATEWAY_LISTEN=0.0.0.0:8080 GATEWAY_DATA_DIR=/var/lib/s3gw
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway", "serve"]
