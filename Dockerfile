# Warden container image. Multi-stage: the final stage holds only the warden binary,
# the OpenVINO runtime libraries and the C++ runtime they need; no compiler, no pip,
# no shell tools beyond Debian's base.
#
#   docker build -t warden .
#   docker run --rm --read-only --tmpfs /tmp --user 5000:5000 \
#     -v $PWD/models:/models:ro -v $PWD/certs:/certs:ro -p 8443:8443 warden \
#     serve --model-path /models/nsfw --model-name nsfw \
#       --tls-cert /certs/server.pem --tls-key /certs/server.key \
#       --jwt-key /certs/jwt.pub.pem --jwt-issuer ISSUER --jwt-audience warden

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p warden \
 && install -m 0755 target/release/warden /warden

FROM python:3.11-slim-bookworm AS openvino
# The runtime comes from the same PyPI wheel scripts/fetch-runtime.sh uses.
COPY scripts/fetch-runtime.sh /src/scripts/fetch-runtime.sh
RUN cd /src && bash scripts/fetch-runtime.sh && cp -a .runtime/openvino /openvino

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 5000 warden-backend && useradd --uid 5000 --gid 5000 --no-create-home --shell /usr/sbin/nologin warden-backend \
 && groupadd --gid 5001 warden-gateway && useradd --uid 5001 --gid 5001 --no-create-home --shell /usr/sbin/nologin warden-gateway
COPY --from=build /warden /usr/local/bin/warden
COPY --from=openvino /openvino /opt/openvino
ENV WARDEN_OPENVINO_DIR=/opt/openvino
# Non-root by default, like OVMS's uid 5000. Started as root instead, `warden serve`
# runs the backend as 5000 and the gateway as 5001 itself.
USER 5000:5000
EXPOSE 8443 9443
ENTRYPOINT ["/usr/local/bin/warden"]
CMD ["serve", "--config", "/etc/warden/warden.toml", "--socket-dir", "/tmp/warden"]
