#!/usr/bin/env bash
# FastReject's hot-path cost: helloworld served with --fast-reject on and off, alternating, each
# loaded by `svrkit bench` at concurrency 1000 over 4 connections for 5 s. Needs `npm run build`
# and the examples' generated code (`npm start` or `npm test` make it).
#
#   bench/fastreject-ab.sh [rounds]
set -u
cd "$(dirname "$0")/.."
rounds=${1:-2}
log=$(mktemp)
for round in $(seq 1 "$rounds"); do
  for fr in on off; do
    node bin/svrkit.js run examples/helloworld/greeter.ts --port 0 --fast-reject "$fr" > "$log" 2>&1 &
    spid=$!
    for _ in $(seq 1 200); do grep -q "serving" "$log" && break; sleep 0.1; done
    addr=$(grep -o "on [0-9.:]*" "$log" | head -1 | cut -d' ' -f2)
    r=$(node bin/svrkit.js bench "$addr" helloworld.Greeter/SayHello '{"name":"x"}' -c 1000 --connections 4 -d 5s --json 2>/dev/null)
    echo "$round fast-reject=$fr $(echo "$r" | node -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8")); console.log(Math.round(r.callsPerSecond), "calls/s  p99", r.latencyMs.p99, "ms  errors", JSON.stringify(r.errors))')"
    kill "$spid"; wait "$spid" 2>/dev/null
  done
done
rm -f "$log"
