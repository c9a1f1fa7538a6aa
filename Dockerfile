# Multi-stage build: a static-enough binary on a small, non-root runtime image.
# The full image, not -slim: the bundled librdkafka, OpenSSL and jemalloc build with make and
# perl, which the slim image (gcc and libc6-dev only) lacks.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
# The crate version and the commit: docker build --build-arg REVISION="$(git rev-parse HEAD)" .
# scripts/image.sh builds the same image without Docker; tests/live/image.rs compares the two.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://example.invalid/kfp-event-bridge" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/kfp-event-bridge /usr/local/bin/kfp-event-bridge
COPY --from=build /src/examples/recordings /usr/share/kfp-event-bridge/recordings
USER 65532:65532
# The admin server (/healthz, /readyz, /metrics) listens on every interface in a container.
ENV KFP_BRIDGE_ADMIN_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kfp-event-bridge"]
