# berth: the production load-balancer image.
#
#   docker build -t berth .
#   docker run -d --name berth -p 80:80 -p 127.0.0.1:9900:9900 \
#     -v /var/run/docker.sock:/var/run/docker.sock:ro \
#     --group-add "$(stat -c %g /var/run/docker.sock)" berth
#
# At the edge (HTTPS, ACME): see the README's deploy section and conf/edge.yaml.
#
# Two stages:
# - `build` compiles berth. It needs registry access: the rust image, Debian's apt mirror (cmake)
#   and crates.io.
# - `runtime` holds only the binary, CA certificates, conf/ and the ACME storage directory
#   (owned by berth's user, 0700, so a named volume mounted there starts out writable), on
#   RUNTIME_BASE. It copies everything it needs from the `build` stage's /out/ and runs no
#   commands, so it builds on any base. tests/container.rs builds this stage verbatim, without a registry: it replaces
#   `build` with an image holding the host's binary under /out/ and sets RUNTIME_BASE to an
#   image of the binary's shared libraries.

ARG RUNTIME_BASE=debian:bookworm-slim

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, in their own layer: a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > benches/hot_path.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src src
# The release profile keeps line tables for profiling; the image drops them (65 MB -> 15 MB)
# and keeps the symbol names, so a panic's backtrace still names functions.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -D target/release/berth /out/usr/local/bin/berth \
 && strip --strip-debug /out/usr/local/bin/berth \
 && install -D /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt \
 && install -d -m 0700 -o 10001 -g 10001 /out/var/lib/berth/acme

FROM ${RUNTIME_BASE} AS runtime
COPY --from=build /out/ /
COPY conf/ /etc/berth/
ENV BERTH_CONFIG=/etc/berth/docker.yaml \
    RUST_LOG=info,pingora_core=warn,pingora_proxy=warn
# Not root. To read the Docker socket, add the socket's group at run time:
#   --group-add "$(stat -c %g /var/run/docker.sock)"
# (Docker lets unprivileged processes bind port 80 inside a container since 20.10.)
USER 10001:10001
EXPOSE 80 443 9900
# docker stop sends SIGTERM and kills after 10 s; conf/docker.yaml's grace_period is 8 s, and
# berth exits as soon as in-flight requests are done.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/berth", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["serve"]
