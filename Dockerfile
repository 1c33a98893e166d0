# Weir's container image: a builder stage with the Rust toolchain (the first-party plugins are
# built for wasm32-wasip2 first, so the binary embeds them), then a small runtime image holding
# only the binary, run as a non-root user. docs/deploy.md has the details.
#
#   docker build -t weir .
#   docker run --rm -p 8080:8080 weir                      # the embedded default (a mock provider)
#   docker run --rm -p 8080:8080 -v $PWD/weir.toml:/etc/weir/weir.toml:ro weir serve --config /etc/weir/weir.toml --listen 0.0.0.0:8080

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip2
COPY . .
# Cache mounts keep the registry and the target directory between builds; the binary is copied
# out of the mounted target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    --mount=type=cache,target=/src/plugins/target \
    cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release \
    && cargo build --release -p weir \
    && install -D target/release/weir /out/weir

# glibc and libgcc only, no shell or package manager; runs as uid 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/weir /usr/local/bin/weir
# Compiled plugins are cached here (owned by the nonroot user, as the cache's trust check wants).
ENV XDG_CACHE_HOME=/home/nonroot/.cache
USER nonroot
# 8080: the API, /health, /ready, /metrics. The admin API stays on loopback unless configured.
EXPOSE 8080
# No HEALTHCHECK: the image has no HTTP client; orchestrators probe GET /ready (Kubernetes:
# deploy/k8s/weir.yaml) and GET /health.
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
