# syntax=docker/dockerfile:1
# The operator image. Build from the workspace root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/closetconnect/clothjob-operator:0.1.0 .
# Without a Docker engine, `cargo xtask images` builds the same image as an OCI archive.
ARG VERSION=0.1.0

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p clothjob-operator \
 && install -D -m 0755 target/release/clothjob-operator /out/clothjob-operator

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION
LABEL org.opencontainers.image.title="clothjob-operator" \
      org.opencontainers.image.description="ClothJob operator: runs ClothJobs (closetconnect.io/v1alpha1) as Kubernetes Jobs" \
      org.opencontainers.image.source="https://example.invalid/clothjob-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/clothjob-operator /usr/local/bin/clothjob-operator
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/clothjob-operator"]
