#!/usr/bin/env bash
# Unary throughput with tickets off and on (a ticket the server has seen before: a cache lookup),
# alternating A (off) and B (on) for PAIRS pairs, against `svrkit run examples/helloworld/greeter.ts`.
#
#   npm run build && bash bench/tickets/unary.sh [PAIRS=3] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/../.."
PAIRS=${1:-3}
SECS=${2:-10}
DIR=$(mktemp -d)
trap 'kill $OFF $ON 2>/dev/null || true; rm -rf "$DIR"' EXIT
node bin/svrkit.js ticket keygen --kid bench > "$DIR/keys.json"
TICKET=$(node bin/svrkit.js ticket issue --keys "$DIR/keys.json" --user bench-user --ttl 1h)
node bin/svrkit.js run examples/helloworld/greeter.ts --port 0 > "$DIR/off.log" 2>&1 & OFF=$!
node bin/svrkit.js run examples/helloworld/greeter.ts --port 0 --ticket-keys "$DIR/keys.json" > "$DIR/on.log" 2>&1 & ON=$!
for f in off on; do until grep -q "serving" "$DIR/$f.log"; do sleep 0.2; done; done
A=$(grep -o 'on 127.0.0.1:[0-9]*' "$DIR/off.log" | head -1 | cut -d' ' -f2)
B=$(grep -o 'on 127.0.0.1:[0-9]*' "$DIR/on.log" | head -1 | cut -d' ' -f2)
echo "tickets off: $A, tickets on: $B; $PAIRS pairs of ${SECS}s, c=1000 over 4 connections"
for i in $(seq 1 "$PAIRS"); do
  a=$(node bin/svrkit.js bench "$A" helloworld.Greeter/SayHello '{"name":"x"}' -c 1000 --connections 4 -d "${SECS}s" --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);console.log(Math.round(r.callsPerSecond), Object.keys(r.errors).length ? JSON.stringify(r.errors) : "")})')
  b=$(node bin/svrkit.js bench "$B" helloworld.Greeter/SayHello '{"name":"x"}' -c 1000 --connections 4 -d "${SECS}s" --json --ticket "$TICKET" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);console.log(Math.round(r.callsPerSecond), Object.keys(r.errors).length ? JSON.stringify(r.errors) : "")})')
  echo "| $i | $a | $b |"
done
