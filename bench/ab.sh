#!/usr/bin/env bash
# A/B of two svrkit sides on the same machine, alternating, so that noise hits both alike: each
# round serves helloworld with side A's `svrkit run` and loads it with the same tree's
# `svrkit bench` (concurrency 1000 over 4 connections, 5 s), then does the same with side B.
#
# A side is a tree, optionally followed by `::` and extra `svrkit run` flags:
#
#   bench/ab.sh /tmp/svrkit-old . [rounds]                                # two trees
#   bench/ab.sh .::--fast-reject=on .::--fast-reject=off [rounds]          # one tree, two settings
#
# A second tree is made with:
#   git worktree add /tmp/svrkit-old <commit> && ln -s "$PWD/node_modules" /tmp/svrkit-old/
#   (cd /tmp/svrkit-old && npm run build && npx tsx codegen/cli.ts examples/helloworld/greeter.proto --out examples/helloworld/gen)
#
# Needs `npm run build` and the examples' generated code in each tree. Prints one line per run:
# round, side, calls/s, p99 (ms), errors by status.
set -u
rounds=${3:-3}
log=$(mktemp)
for round in $(seq 1 "$rounds"); do
  for side in "$1" "$2"; do
    tree=${side%%::*}
    flags=""
    [ "$side" != "$tree" ] && flags=${side#*::}
    (
      cd "$tree" || exit 1
      # shellcheck disable=SC2086
      node bin/svrkit.js run examples/helloworld/greeter.ts --port 0 $flags > "$log" 2>&1 &
      spid=$!
      for _ in $(seq 1 200); do grep -q "serving" "$log" && break; sleep 0.1; done
      addr=$(grep -o "on [0-9.:]*" "$log" | head -1 | cut -d' ' -f2)
      r=$(node bin/svrkit.js bench "$addr" helloworld.Greeter/SayHello '{"name":"x"}' -c 1000 --connections 4 -d 5s --json 2>/dev/null)
      echo "$round $side $(echo "$r" | node -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8")); console.log(Math.round(r.callsPerSecond), "calls/s  p99", r.latencyMs.p99, "ms  errors", JSON.stringify(r.errors))')"
      kill "$spid"; wait "$spid" 2>/dev/null
    )
  done
done
rm -f "$log"
