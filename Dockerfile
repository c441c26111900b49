# SPDX-License-Identifier: Apache-2.0
# pgcdc on Debian 12 slim: build with the -dev packages, run with the runtime libraries only.
#   docker build -t pgcdc .
#   docker run --rm -v $PWD/pgcdc.yml:/etc/pgcdc/pgcdc.yml pgcdc run -c /etc/pgcdc/pgcdc.yml
FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libpq-dev libmsgpack-dev libyaml-dev libcyaml-dev \
      libnats-dev libhiredis-dev libmemcached-dev libcurl4-openssl-dev libjansson-dev \
      libmicrohttpd-dev libssl-dev libcriterion-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DPGCDC_BUILD_TESTS=OFF \
      -DCMAKE_INSTALL_PREFIX=/usr \
 && cmake --build /build -j"$(nproc)" \
 && DESTDIR=/out cmake --install /build

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpq5 libmsgpackc2 libyaml-0-2 libnats3.4 libhiredis0.14 libmemcached11 libcurl4 \
      libjansson4 libmicrohttpd12 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/pgcdc --create-home pgcdc
COPY --from=build /out/usr/bin/pgcdc /usr/bin/pgcdc
COPY --from=build /out/usr/include/pgcdc /usr/include/pgcdc
COPY --from=build /out/usr/lib/ /usr/lib/
USER pgcdc
WORKDIR /var/lib/pgcdc
# /metrics, /healthz, /readyz when the config sets http.listen: 0.0.0.0:9187
EXPOSE 9187
# bash's /dev/tcp: the slim image has no curl. Ready = streaming and every sink delivering.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9187 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '^ready' <&3"]
ENTRYPOINT ["/usr/bin/pgcdc"]
CMD ["--help"]
