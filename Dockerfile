# Multi-stage build: a static-enough binary on a small, non-root runtime image.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kfp-event-bridge

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/kfp-event-bridge /usr/local/bin/kfp-event-bridge
COPY --from=build /src/examples/recordings /usr/share/kfp-event-bridge/recordings
USER nonroot
ENTRYPOINT ["/usr/local/bin/kfp-event-bridge"]
