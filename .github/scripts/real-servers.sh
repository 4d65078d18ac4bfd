#!/usr/bin/env bash
# Starts the real servers of the end-to-end job on the runner's 127.0.0.1, next to the search
# engine that runs as the job's service container: MongoDB as a one-node replica set (a service
# container cannot be given mongod's --replSet, so it is started here) and NATS with JetStream
# (likewise for nats-server's -js). Appends MONGO_URL and NATS_URL to $GITHUB_ENV, then waits
# until MongoDB has a writable primary and ES_URL answers.
#
#   real-servers.sh MONGO_VERSION      e.g. real-servers.sh 8.0
set -euo pipefail

mongo_version=${1:?usage: real-servers.sh MONGO_VERSION}
es_url=${ES_URL:?ES_URL must point at the search service container}

docker run --detach --name mongo --publish 127.0.0.1:27017:27017 "mongo:${mongo_version}" --replSet rs0 --bind_ip_all
docker run --detach --name nats --publish 127.0.0.1:4222:4222 nats:2.11 -js

mongosh_eval() {
  docker exec mongo mongosh --quiet --eval "$1"
}

initiate='try { rs.status().ok } catch (e) { rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "127.0.0.1:27017" }] }).ok }'
for attempt in $(seq 90); do
  if [ "$(mongosh_eval "$initiate" 2>/dev/null)" = 1 ] && [ "$(mongosh_eval 'db.hello().isWritablePrimary' 2>/dev/null)" = true ]; then
    echo "MongoDB ${mongo_version}: replica set rs0 has a primary (attempt ${attempt})"
    break
  fi
  if [ "$attempt" = 90 ]; then
    docker logs mongo | tail -50
    exit 1
  fi
  sleep 2
done

for attempt in $(seq 90); do
  if curl --silent --fail "${es_url}/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null; then
    curl --silent "${es_url}"
    break
  fi
  if [ "$attempt" = 90 ]; then
    echo "the search engine at ${es_url} did not answer" >&2
    exit 1
  fi
  sleep 2
done

{
  echo "MONGO_URL=mongodb://127.0.0.1:27017/?replicaSet=rs0"
  echo "NATS_URL=nats://127.0.0.1:4222"
} >>"${GITHUB_ENV:?}"
