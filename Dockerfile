# Warden container image. Multi-stage: the final stage holds only the warden binary, the
# OpenVINO runtime libraries, the image's warden.toml and the C/C++ runtime they need
# (distroless: glibc, libstdc++, libgcc). No compiler, no pip, no package manager, no
# shell.
#
#   docker build -t warden .
#   warden certs-dev --out certs        # or your own server.pem, server.key, jwt.pub.pem
#   docker run --rm -d --user 5000:5000 --read-only --tmpfs /tmp \
#     --cap-drop ALL --security-opt no-new-privileges \
#     -v $PWD/models/:/models:ro -v $PWD/certs:/etc/warden/certs:ro \
#     -p 8443:8443 -p 9178:9178 warden --model_path /models/resnet/ --model_name resnet --port 9178
#
# The arguments are OVMS's (`--model_path`, `--model_name`, `--config_path`, `--port`,
# `--rest_port`, ...) or Warden's own flags; they override /etc/warden/warden.toml
# (deploy/container/warden.toml). Kubernetes runs the same image as two containers
# (`warden gateway`, `warden backend`) with its own command: deploy/kubernetes; KServe
# runs `warden serve` in one container: deploy/kserve.
#
# Every base image is a build argument, so a machine without a registry can build the
# same stages from local images (scripts/container-test.sh does):
#   BUILD_BASE    the Rust toolchain that compiles warden         (WARDEN_FROM=source)
#   PYTHON_BASE   pip, to unpack the OpenVINO runtime wheel      (WARDEN_FROM=source)
#   RUNTIME_BASE  the final stage: glibc + libstdc++ + libgcc, nothing else
# WARDEN_FROM=prebuilt takes `warden` and `openvino/` from the build context instead of
# compiling them (the context then holds just those and deploy/container/warden.toml);
# the final stage is the same either way. The unused stages are skipped, as BuildKit
# (docker build) and buildah (podman build) do by default.

ARG BUILD_BASE=docker.io/library/rust:1.95-bookworm
ARG PYTHON_BASE=docker.io/library/python:3.11-slim-bookworm
# Debian 12 like the build stage (same glibc); distroless "cc" adds exactly libstdc++6,
# libgcc-s1 and libgomp1 to glibc, CA certificates and tzdata. Pin it by digest in
# production (gcr.io/distroless/cc-debian12@sha256:...).
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12
ARG WARDEN_FROM=source

FROM ${BUILD_BASE} AS build-source
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p warden \
 && install -m 0755 target/release/warden /warden

FROM ${PYTHON_BASE} AS openvino-source
# The runtime comes from the same PyPI wheel scripts/fetch-runtime.sh uses.
COPY scripts/fetch-runtime.sh /src/scripts/fetch-runtime.sh
RUN cd /src && bash scripts/fetch-runtime.sh && cp -a .runtime/openvino /openvino

FROM scratch AS build-prebuilt
COPY warden /warden

FROM scratch AS openvino-prebuilt
COPY openvino /openvino

FROM build-${WARDEN_FROM} AS build
FROM openvino-${WARDEN_FROM} AS openvino

FROM scratch AS files
COPY deploy/container/warden.toml /warden.toml

FROM ${RUNTIME_BASE}
COPY --from=build --chown=0:0 /warden /usr/local/bin/warden
COPY --from=openvino --chown=0:0 /openvino /opt/openvino
COPY --from=files --chown=0:0 /warden.toml /etc/warden/warden.toml
ENV WARDEN_OPENVINO_DIR=/opt/openvino
# Non-root by default, like OVMS's uid 5000: `warden serve` then runs all three
# processes as 5000. Any other non-root uid works the same (OpenShift's arbitrary
# uids). Started as root instead (--user 0), the supervisor keeps root and runs the
# backend as 5000 and the gateway as 5001; without the capabilities to switch it
# refuses to start (README, "Container").
USER 5000:5000
EXPOSE 8443 9443
# SIGTERM (docker stop, the kubelet) reaches `warden serve` as PID 1, which stops the
# gateway first (it finishes the calls in flight) and then the backend; no --init needed.
STOPSIGNAL SIGTERM
# Ready = the gateway answers 200 on /v2/health/ready, which needs the backend and its
# models. The probe runs inside the container over loopback, where the image cannot
# know the operator's CA: hence --insecure-skip-verify (local health checks only). If
# you move the REST port, override this in `docker run --health-cmd` or compose.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["/usr/local/bin/warden", "health", "--address", "127.0.0.1:8443", "--insecure-skip-verify"]
# The arguments of `docker run IMAGE ...` are `serve` flags, as with OVMS's image. For
# another subcommand: docker run --entrypoint /usr/local/bin/warden IMAGE token ...
ENTRYPOINT ["/usr/local/bin/warden", "serve", "--config", "/etc/warden/warden.toml"]
CMD []
