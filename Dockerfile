# syntax=docker/dockerfile:1
#
# bedrock-privatelink-operator image.
#   docker build -t <registry>/bedrock-privatelink-operator:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... --push .   # Graviton nodes too
#
# glibc build + distroless "cc": aws-lc-sys (the SDK's TLS crypto) is C code that builds with the
# image's own gcc, and both stages are Debian 12 (glibc 2.36), so no cross or musl toolchain is needed
# and every platform builds natively.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# The whole (filtered, see .dockerignore) tree: Cargo.toml may name targets outside src/.
COPY . .
# Cache mounts keep the registry and incremental target dir between builds; the binary is copied out
# in the same step because the target cache is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin bedrock-privatelink-operator \
 && install -D -m 0755 target/release/bedrock-privatelink-operator /out/bedrock-privatelink-operator

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="bedrock-privatelink-operator" \
      org.opencontainers.image.description="Kubernetes operator that gives workloads private access to Amazon Bedrock through AWS PrivateLink" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=builder /out/bedrock-privatelink-operator /bedrock-privatelink-operator
# distroless "nonroot": uid/gid 65532, matching the chart's runAsUser/runAsGroup.
# glibc malloc: two arenas, not one per busy thread (the chart sets it too; BENCHMARKS.md).
ENV MALLOC_ARENA_MAX=2
USER 65532:65532
# /healthz, /readyz, /metrics
EXPOSE 8080
ENTRYPOINT ["/bedrock-privatelink-operator"]
CMD ["run"]
