# The Tributary image, helm/tributary's default: one `tributary` binary for
# the controller, the node agent and the aggregator functions it starts,
# loadgen and the chart's key hook, on Debian 12 slim with only the libraries
# it links.
#
#   podman build --network host -t localhost/tributary .
#   scripts/image                  the same with no registry: Debian bases from mmdebstrap
#
# Build arguments:
#   BUILD_BASE, RUNTIME_BASE   the Debian 12 images to build and to run on
#   BINARY=prebuilt            take prebuilt/tributary from the build context
#                              instead of compiling (scripts/image --binary)
ARG BUILD_BASE=docker.io/library/debian:bookworm
ARG RUNTIME_BASE=docker.io/library/debian:bookworm-slim
ARG BINARY=compiled

FROM ${BUILD_BASE} AS compiled
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config clang llvm libbpf-dev bpftool linux-libc-dev \
      libboost-dev libzmq3-dev cppzmq-dev libprotobuf-dev protobuf-compiler libyaml-cpp-dev libcli11-dev \
      libspdlog-dev libfmt-dev nlohmann-json3-dev libcpp-httplib-dev libxxhash-dev zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
# Only the binary: no LibTorch, no tests (TRIBUTARY_RUNTIME_ONLY).
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTRIBUTARY_RUNTIME_ONLY=ON \
 && cmake --build /build --target tributary -j"$(nproc)" \
 && mkdir -p /out && strip -o /out/tributary /build/tributary

FROM scratch AS prebuilt
COPY prebuilt/tributary /out/tributary

FROM ${BINARY} AS binary

FROM ${RUNTIME_BASE}
# What `ldd tributary` names, by package (their own dependencies follow).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libbpf1 libbrotli1 libcpp-httplib0.11 libelf1 libfmt9 libgomp1 libprotobuf32 libsodium23 \
      libspdlog1.10 libssl3 libxxhash0 libyaml-cpp0.7 libzmq5 zlib1g \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY --from=binary /out/tributary /usr/local/bin/tributary
# Non-root by default; the node agent's pod runs as root only for the eBPF
# data plane (helm/tributary), with two capabilities and every other dropped.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tributary"]
CMD ["--help"]
LABEL org.opencontainers.image.title="tributary" \
      org.opencontainers.image.description="Serverless federated-learning aggregation over shared memory"
