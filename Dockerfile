# Warden container image. Multi-stage: the final stage holds only the warden binary, the
# OpenVINO runtime libraries and the C/C++ runtime they need (distroless: glibc,
# libstdc++, libgcc). No compiler, no pip, no package manager, no shell.
#
#   docker build -t warden .
#   docker run --rm --read-only --tmpfs /tmp --user 5000:5000 \
#     --cap-drop ALL --security-opt no-new-privileges \
#     -v $PWD/models:/models:ro -v $PWD/certs:/certs:ro -p 8443:8443 -p 9443:9443 warden \
#     serve --socket-dir /tmp/warden --model-path /models/nsfw --model-name nsfw \
#       --tls-cert /certs/server.pem --tls-key /certs/server.key \
#       --jwt-key /certs/jwt.pub.pem --jwt-issuer ISSUER --jwt-audience warden
#
# Kubernetes runs the same image as two containers (`warden gateway`, `warden backend`):
# deploy/kubernetes.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p warden \
 && install -m 0755 target/release/warden /warden

FROM python:3.11-slim-bookworm AS openvino
# The runtime comes from the same PyPI wheel scripts/fetch-runtime.sh uses.
COPY scripts/fetch-runtime.sh /src/scripts/fetch-runtime.sh
RUN cd /src && bash scripts/fetch-runtime.sh && cp -a .runtime/openvino /openvino

# Debian 12 like the build stage (same glibc); distroless "cc" adds exactly libstdc++6,
# libgcc-s1 and libgomp1 to glibc, CA certificates and tzdata. Pin it by digest in
# production (gcr.io/distroless/cc-debian12@sha256:...).
FROM gcr.io/distroless/cc-debian12
COPY --from=build --chown=0:0 /warden /usr/local/bin/warden
COPY --from=openvino --chown=0:0 /openvino /opt/openvino
ENV WARDEN_OPENVINO_DIR=/opt/openvino
# Non-root by default, like OVMS's uid 5000: `warden serve` then runs both sides as
# 5000. Started as root instead (docker run --user 0), it runs the backend as 5000 and
# the gateway as 5001 itself.
USER 5000:5000
EXPOSE 8443 9443
# Ready = the gateway answers 200 on /v2/health/ready, which needs the backend and its
# models. The probe runs inside the container over loopback, where the image cannot
# know the operator's CA: hence --insecure-skip-verify (local health checks only). If
# you move the REST port, override this in `docker run --health-cmd` or compose.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["/usr/local/bin/warden", "health", "--address", "127.0.0.1:8443", "--insecure-skip-verify"]
ENTRYPOINT ["/usr/local/bin/warden"]
# Default: a mounted /etc/warden/warden.toml; the socket goes to /tmp so the image
# works with --read-only --tmpfs /tmp.
CMD ["serve", "--config", "/etc/warden/warden.toml", "--socket-dir", "/tmp/warden"]
