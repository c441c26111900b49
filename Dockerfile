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
      libjansson4 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/pgcdc --create-home pgcdc
COPY --from=build /out/usr/bin/pgcdc /usr/bin/pgcdc
COPY --from=build /out/usr/include/pgcdc /usr/include/pgcdc
COPY --from=build /out/usr/lib/ /usr/lib/
USER pgcdc
WORKDIR /var/lib/pgcdc
ENTRYPOINT ["/usr/bin/pgcdc"]
CMD ["--help"]
