# clean-host in a container: a build stage (the host, the wasm32-wasip2
# target, the bundled plugins), then a slim runtime run by a non-root user.
#   docker build -t clean-host .
#   docker run -p 8080:8080 -v clean-data:/data -e CLEAN_HOST_SOURCE=generator clean-host
# The plugins folder and the data dir are volumes (mount your own plugins
# over /plugins; the running host loads what is dropped there). SIGTERM
# drains: the host stops reading, analyses what it read, commits, exits.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler cmake pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release -p clean-host \
 && (cd plugins && cargo build --release) \
 && mkdir -p /out/plugins \
 && for manifest in plugins/*/Cargo.toml; do \
        cp "plugins/target/wasm32-wasip2/release/$(basename "$(dirname "$manifest")" | tr - _).wasm" /out/plugins/; \
    done

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 zlib1g ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home clean-host \
 && mkdir -p /data /plugins \
 && chown 10001 /data /plugins
COPY --from=build /src/target/release/clean-host /usr/local/bin/clean-host
COPY --from=build --chown=10001 /out/plugins/ /plugins/
USER 10001
ENV CLEAN_HOST_PLUGINS=/plugins \
    CLEAN_HOST_DATA_DIR=/data \
    CLEAN_HOST_LISTEN=0.0.0.0:8080
VOLUME ["/data", "/plugins"]
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["clean-host"]
