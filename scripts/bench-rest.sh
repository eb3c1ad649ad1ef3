#!/usr/bin/env bash
# Durable enqueue through the REST API, measured with wrk (a separate C
# client process, 64 connections) against a gateway binary on loopback.
# Usage: scripts/bench-rest.sh [runs] [seconds]. Needs wrk (apt-get install wrk).
set -euo pipefail
runs=${1:-3}
secs=${2:-8}
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $gw 2>/dev/null; wait $gw 2>/dev/null; rm -rf "$work"' EXIT
go build -o "$work/gateway" ./cmd/gateway
port=$((20000 + RANDOM % 20000))
token=bench-admin-token-$RANDOM$RANDOM
"$work/gateway" --data-dir "$work/data" --http-addr 127.0.0.1:$port --https-addr "" --xmpp-addr "" \
  --xmpps-addr "" --metrics-addr "" --admin-token "$token" --log-level warn 2>"$work/gateway.log" &
gw=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done
key=$(curl -sf -H "Authorization: Bearer $token" -d '{"id":"bench"}' http://127.0.0.1:$port/v1/apps |
  sed -n 's/.*"api_key":"\([^"]*\)".*/\1/p')
cat >"$work/post.lua" <<LUA
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"to":["user%04d"],"body":"hello %d","data":{"seq":%d}}', counter % 1000, counter, counter)
  return wrk.format("POST", "/v1/apps/bench/messages", {["Authorization"]="Bearer $key", ["Content-Type"]="application/json"}, body)
end
response = function(status, headers, body)
  if status ~= 202 then io.stderr:write("unexpected status " .. status .. "\n") end
end
LUA
for i in $(seq "$runs"); do
  echo "== run $i: wrk -t2 -c64 -d${secs}s"
  wrk -t2 -c64 -d"${secs}s" --latency -s "$work/post.lua" http://127.0.0.1:$port | grep -E 'Requests/sec|^ +(50|99)%'
done
