#!/usr/bin/env node
// The svrkit command. The CLI itself is TypeScript compiled to dist/ by `npm run build`
// (run automatically by `npm install` through the `prepare` script).
import '../dist/framework/cli/main.js';
