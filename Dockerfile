# syntax=docker/dockerfile:1
# mongo-elastic-sync as a container: the CLI with a config file and environment variables.
#
#   docker build -t mongo-elastic-sync .
#   docker run -v ./sync.yaml:/etc/mongo-elastic-sync/sync.yaml:ro \
#     -e MONGO_URL=... -e ES_URL=... mongo-elastic-sync
#
# The addon is built from source (musl, for the Alpine runtime), packed the way npm ships it
# (scripts/pack.js) and installed globally in a small runtime image. Where the project is
# developed there is no docker daemon: this file is linted (hadolint, `npm run lint`), not built.

ARG NODE_VERSION=22
ARG ALPINE_VERSION=3.22

FROM rust:1-alpine${ALPINE_VERSION} AS build
# A cdylib needs the dynamic C runtime on musl.
ENV RUSTFLAGS="-C target-feature=-crt-static"
# Alpine's own nodejs/npm of that release: pinning exact apk versions breaks with every security update.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev nodejs npm
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npx napi build --platform --release \
 && node scripts/pack.js /dist

FROM node:${NODE_VERSION}-alpine${ALPINE_VERSION}
ENV NODE_ENV=production \
    SYNC_HEALTH_FILE=/tmp/mongo-elastic-sync.health
COPY --from=build /dist /tmp/dist
# The two tarballs: the package and its linux-<arch>-musl binary package.
RUN npm install --global --no-audit --no-fund /tmp/dist/*.tgz \
 && rm -rf /tmp/dist \
 && npm cache clean --force
# node (uid 1000 in the node images)
USER 1000:1000
WORKDIR /home/node
# Healthy while the sync is starting, copying or streaming (the CLI refreshes the health file
# every 10 s); a failed or stopped sync ends the container anyway (exit 1 or 0).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["mongo-elastic-sync", "--healthcheck"]
ENTRYPOINT ["mongo-elastic-sync"]
CMD ["--config", "/etc/mongo-elastic-sync/sync.yaml"]
