#!/usr/bin/env node
// The svrkit command. The CLI itself is TypeScript compiled to dist/ by `npm run build`
// (run automatically by `npm install` through the `prepare` script).
import { setFlagsFromString } from 'node:v8';

// V8's allocation-site pretenuring off, before any service code runs, unless node was started
// with an --[no-]allocation-site-pretenuring of its own. After a burst in which most objects of an
// object literal outlived a scavenge (the first calls of a new HTTP/2 session do), V8 may allocate
// that literal's later objects straight in old space; each one then holds young objects of its
// call (headers, HTTP/2 streams and all they reach) through every scavenge until the next full
// GC. A gRPC-serving process that fell into this collected garbage five times as long as
// grpc-js's, and used about 9 us more CPU per call at 3,000 calls/s (README, "gRPC clients on a
// svrkit server", "How fast"). Programs that embed `Server` get the same with
// `node --no-allocation-site-pretenuring`.
if (!process.execArgv.some((a) => /^--(no-)?allocation[-_]site[-_]pretenuring$/.test(a))) {
  setFlagsFromString('--no-allocation-site-pretenuring');
}

await import('../dist/framework/cli/main.js');
