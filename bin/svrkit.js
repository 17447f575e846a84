#!/usr/bin/env node
// The svrkit command. The CLI itself is TypeScript compiled to dist/ by `npm run build`
// (run automatically by `npm install` through the `prepare` script).
import { setFlagsFromString } from 'node:v8';

// V8's allocation-site pretenuring off, before any service code runs. After a burst in which most
// objects of an object literal outlived a scavenge (the first calls of a new HTTP/2 session do),
// V8 may allocate that literal's later objects straight in old space; each one then holds young
// objects of its call (headers, HTTP/2 streams and all they reach) through every scavenge until
// the next full GC. A gRPC-serving process that fell into this spent 7 ms per scavenge instead of
// 1.5 ms, about 7 us of CPU per call at 3,000 calls/s (README, "How fast"). Embedders of `Server`
// get the same with `node --no-allocation-site-pretenuring`.
setFlagsFromString('--no-allocation-site-pretenuring');

await import('../dist/framework/cli/main.js');
