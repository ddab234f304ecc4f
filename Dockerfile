# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as
# a non-root user. Not exercised by CI (the CI machines have no Docker engine).
# The build needs crates.io only: the Swagger UI of /docs comes from the
# `utoipa-swagger-ui` crate's `vendored` feature, not from a download.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app plan-queue
WORKDIR /app
COPY --from=build /src/target/release/plan-queue /usr/local/bin/plan-queue
COPY fixtures fixtures
USER 10001
ENV BIND_ADDR=0.0.0.0:8080 RUST_LOG=info
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=2s --retries=5 CMD curl -fsS http://127.0.0.1:8080/health/live || exit 1
ENTRYPOINT ["plan-queue"]
CMD ["serve"]
