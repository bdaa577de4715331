# openclaw-csi-provider: the provider DaemonSet and the sync controller share this image.
#   docker build --build-arg VERSION=0.1.0 --build-arg COMMIT=$(git rev-parse HEAD) -t openclaw-csi-provider .
# Build stage: the toolchain of rust-toolchain.toml, the locked dependencies, the `image` profile
# (Cargo.toml: release, stripped, one codegen unit).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY rust-toolchain.toml Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY benches benches
# The demo embeds the file-backend example.
COPY deploy/examples/openclaw-file.yaml deploy/examples/openclaw-file.yaml
RUN cargo build --locked --profile image --bin openclaw-csi-provider

# Final stage: glibc and CA certificates only, no shell, running as a non-root user (65532). The
# DaemonSet's socket directory is a hostPath: the Helm chart's init step gives it to this user, or the
# chart runs the provider as root where the directory cannot be changed.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="openclaw-csi-provider" \
      org.opencontainers.image.description="Secrets Store CSI driver provider: Vault/OpenBao, AWS, GCP and files, as the pod's identity" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/image/openclaw-csi-provider /usr/local/bin/openclaw-csi-provider
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/openclaw-csi-provider"]
CMD ["serve"]
