# AI Aggregator container image: a static musl binary on distroless, non-root, about 17 MB.
#
#   docker build -t ai-aggregator .
#   docker run --rm -p 8080:8080 --stop-timeout 35 -v aia-data:/data \
#     -e TENANT_API_KEY=sk-change-me -e OPENAI_API_KEY=... ai-aggregator
#
# Stages: `builder` compiles on Debian bookworm for x86_64-unknown-linux-musl (ring and the bundled
# SQLite are C, compiled with musl-gcc), so the final stage needs no libc at all.
# The dependency layer is built from the manifests and stub sources only, so editing the sources
# rebuilds just `translators` and `gateway`; editing Cargo.toml or Cargo.lock rebuilds everything.
# scripts/check-deploy lints this file (stub list vs workspace members, ports, paths, user);
# scripts/release-size builds the same binary outside Docker and checks its size.
#
# No HEALTHCHECK on purpose: Kubernetes uses its own probes (GET /healthz liveness, GET /readyz
# readiness), and the final image has no shell or curl to run one. Under plain Docker, probe
# http://<container>:8080/healthz from outside.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
ARG TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add "${TARGET}"
# cc-rs would find musl-gcc on its own; say it explicitly so ring and libsqlite3-sys never fall back to gcc.
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TARGET_DIR=/src/target \
    CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never
WORKDIR /src

# --- Dependency layer: manifests + lockfile, stub sources for every workspace member. ------------
# Keep this list in step with `members` in Cargo.toml (scripts/check-deploy fails when it is not).
COPY Cargo.toml Cargo.lock ./
COPY translators/Cargo.toml translators/Cargo.toml
COPY gateway/Cargo.toml gateway/Cargo.toml
COPY tests/Cargo.toml tests/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
# Stubs: src/lib.rs in every member, plus every target a manifest names ([lib], [[bin]], [[bench]],
# [[test]], [[example]]: its `path`, or the default path for its `name`), read from the manifests at
# build time so a new bench binary needs no change here. `fn main() {}` everywhere but [lib].
RUN set -eu; \
    for member in translators gateway tests bench; do \
      mkdir -p "$member/src"; \
      : > "$member/src/lib.rs"; \
      awk 'function value(line) { sub(/^[^"]*"/, "", line); sub(/".*$/, "", line); return line } ; \
           function flush(  kind) { if (sec == "") return; if (path == "" && name != "") { if (sec == "[[bin]]") path = "src/bin/" name ".rs"; else if (sec == "[[bench]]") path = "benches/" name ".rs"; else if (sec == "[[test]]") path = "tests/" name ".rs"; else if (sec == "[[example]]") path = "examples/" name ".rs" } if (path == "") return; kind = "bin"; if (sec == "[lib]") kind = "lib"; print kind, path } ; \
           /^[ \t]*\[/ { flush(); sec = $1; name = ""; path = ""; if (sec != "[lib]" && sec != "[[bin]]" && sec != "[[bench]]" && sec != "[[test]]" && sec != "[[example]]") sec = ""; next } ; \
           sec != "" && /^[ \t]*name[ \t]*=/ { name = value($0) } ; \
           sec != "" && /^[ \t]*path[ \t]*=/ { path = value($0) } ; \
           END { flush() }' "$member/Cargo.toml" \
      | while read -r kind path; do \
          mkdir -p "$member/$(dirname "$path")"; \
          if [ "$kind" = lib ]; then : > "$member/$path"; else echo 'fn main() {}' > "$member/$path"; fi; \
          echo "stub: $member/$path ($kind)"; \
        done; \
    done; \
    cargo build --release --locked -p ai-aggregator --target "${TARGET}"; \
    rm -rf translators/src gateway/src

# --- Sources: only the two crates in the binary (tests/ and bench/ keep their stubs). -----------
COPY translators translators
COPY gateway gateway
# COPY keeps the context's mtimes, which can be older than the stub build: touch so cargo rebuilds.
RUN set -eu; \
    find translators gateway -type f -name '*.rs' -exec touch {} +; \
    cargo build --release --locked -p ai-aggregator --target "${TARGET}"; \
    mkdir -p /out/data; \
    cp "target/${TARGET}/release/ai-aggregator" /out/ai-aggregator; \
    strip /out/ai-aggregator; \
    chown -R 65532:65532 /out/data; \
    ls -l /out/ai-aggregator

# Refuse to ship a default config the binary rejects (the key is a placeholder for the check only).
COPY deploy/container-config.yaml /out/config.yaml
RUN TENANT_API_KEY=build-check-placeholder /out/ai-aggregator --config /out/config.yaml --check-config

# --- Runtime: static binary, no shell, non-root (uid/gid 65532, "nonroot" in distroless). --------
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="ai-aggregator" \
      org.opencontainers.image.description="OpenAI-compatible AI gateway: OpenAI, Anthropic and Ollama behind one API, metered per tenant." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"

COPY --from=builder /out/ai-aggregator /usr/local/bin/ai-aggregator
COPY pricing.yaml /etc/ai-aggregator/pricing.yaml
COPY gateway.example.yaml /etc/ai-aggregator/gateway.example.yaml
COPY deploy/container-config.yaml /etc/ai-aggregator/config.yaml
# The ledger directory (embedded SQLite store + journal), writable by the runtime user.
COPY --from=builder --chown=65532:65532 /out/data /data

USER 65532:65532
WORKDIR /data
VOLUME /data
EXPOSE 8080
# SIGTERM drains in-flight requests for up to shutdown_grace_secs (30): give `docker stop` -t 35.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ai-aggregator", "--config", "/etc/ai-aggregator/config.yaml"]
