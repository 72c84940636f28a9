# syntax=docker/dockerfile:1.7
# One image for every component (scheduler, analyzer, scaler, balancer, ops),
# for linux/amd64 and linux/arm64 (Jetson boards):
#   docker buildx build --platform linux/amd64,linux/arm64 -t REPO/posture-farm:TAG --push .
# The binary is cross-compiled on the build host (no emulation); the pose
# model and the ONNX Runtime library for the target architecture come from
# registry packages via scripts/setup-models.sh, checked against its manifest.
#
# GPU variant for analyzers (`--target gpu`, tag it e.g. TAG-gpu):
#   docker buildx build --platform linux/amd64,linux/arm64 --target gpu -t REPO/posture-farm:TAG-gpu --push .
# amd64: adds ONNX Runtime's GPU build and the CUDA 12 / cuDNN 9 libraries
# (`setup-models.sh --gpu`, ~2.4 GB); needs only the NVIDIA driver on the node
# (NVIDIA container runtime). arm64 (Jetson): no such build on PyPI; the image
# is the CPU one with POSE_DEVICE=auto, and uses JetPack's onnxruntime when
# ORT_DYLIB_PATH points at it (mounted from the host; see the README).
ARG RUST_VERSION=1.95

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
WORKDIR /src
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu; gcc=x86-64-linux-gnu ;; \
      arm64) triple=aarch64-unknown-linux-gnu; gcc=aarch64-linux-gnu ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac; \
    echo "$triple" > /triple; \
    if [ "$(uname -m)" != "${triple%%-*}" ]; then \
      apt-get update && apt-get install -y --no-install-recommends "gcc-$gcc" "libc6-dev-${TARGETARCH}-cross" && rm -rf /var/lib/apt/lists/*; \
      rustup target add "$triple"; \
    fi
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; triple="$(cat /triple)"; \
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
           CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
           CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=$( [ "$(uname -m)" = x86_64 ] && echo cc || echo x86_64-linux-gnu-gcc ) \
           CC_x86_64_unknown_linux_gnu=$( [ "$(uname -m)" = x86_64 ] && echo cc || echo x86_64-linux-gnu-gcc ); \
    cargo build --release --locked -p posture-farm --target "$triple"; \
    cp "target/$triple/release/posture-farm" /posture-farm

FROM --platform=$BUILDPLATFORM python:3.11-slim-bookworm AS models
ARG TARGETARCH
WORKDIR /src
COPY scripts/ scripts/
RUN set -eu; \
    case "$TARGETARCH" in amd64) arch=x86_64 ;; arm64) arch=aarch64 ;; esac; \
    POSTURE_SETUP_CACHE=/tmp/setup scripts/setup-models.sh --arch "$arch" --models-dir /models; \
    rm -rf /tmp/setup

# The CPU models plus, on amd64, the GPU runtime in /models/gpu.
FROM models AS models-gpu
ARG TARGETARCH
RUN set -eu; \
    if [ "$TARGETARCH" = amd64 ]; then \
      POSTURE_SETUP_CACHE=/tmp/setup scripts/setup-models.sh --arch x86_64 --gpu --models-dir /models; \
      rm -rf /tmp/setup; \
    fi

FROM debian:bookworm-slim AS runtime
# tar: `posture-farm down` collects results through the exec API with tar.
# fonts-dejavu-core: text on annotated images.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tar fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /posture-farm /usr/local/bin/posture-farm
ENV POSTURE_MODELS_DIR=/opt/posture-farm/models
WORKDIR /data
USER 65532:65532
ENTRYPOINT ["posture-farm"]
CMD ["--help"]

# Analyzers on GPU nodes. The NVIDIA container runtime mounts the driver
# (libcuda) when these variables ask for it; the engine cache of
# `--device tensorrt` goes to /data/.cache (mount a volume there to keep it).
FROM runtime AS gpu
COPY --from=models-gpu /models /opt/posture-farm/models
ENV POSE_DEVICE=auto \
    XDG_CACHE_HOME=/data/.cache \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# The default target (last stage): CPU only, as before.
FROM runtime AS cpu
COPY --from=models /models /opt/posture-farm/models
