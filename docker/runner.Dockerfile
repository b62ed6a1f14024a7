# syntax=docker/dockerfile:1
# The runner image, with ONNX Runtime for the `onnx` backends. Build from the workspace root:
#   docker build -f docker/runner.Dockerfile -t ghcr.io/closetconnect/clothjob-runner:0.1.0 .
# Without a Docker engine, `cargo xtask images` builds the same image as an OCI archive.
ARG VERSION=0.1.0
# ONNX Runtime's shared library comes from the PyPI wheel (the one rembg 2.0.86 gets in
# backends/scripts/setup-rembg.sh's venv); the runner loads it from ORT_DYLIB_PATH.
ARG ONNXRUNTIME_VERSION=1.32.0

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p clothjob-runner \
 && install -D -m 0755 target/release/clothjob-runner /out/clothjob-runner

FROM python:3.11-slim-bookworm AS onnxruntime
ARG ONNXRUNTIME_VERSION
RUN pip install --no-cache-dir "onnxruntime==${ONNXRUNTIME_VERSION}" \
 && install -D -m 0644 \
      "/usr/local/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.${ONNXRUNTIME_VERSION}" \
      "/out/libonnxruntime.so.${ONNXRUNTIME_VERSION}"

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION
ARG ONNXRUNTIME_VERSION
LABEL org.opencontainers.image.title="clothjob-runner" \
      org.opencontainers.image.description="ClothJob runner: the clothes image pipeline (background removal, segmentation, expansion, encoding), with ONNX Runtime" \
      org.opencontainers.image.source="https://example.invalid/clothjob-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# distroless/cc has libc, libgcc_s and libstdc++: all that libonnxruntime links.
COPY --from=onnxruntime /out/ /usr/lib/clothjob/
COPY --from=build /out/clothjob-runner /usr/local/bin/clothjob-runner
ENV ORT_DYLIB_PATH=/usr/lib/clothjob/libonnxruntime.so.${ONNXRUNTIME_VERSION} \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/clothjob-runner"]
