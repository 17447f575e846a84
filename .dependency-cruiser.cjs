/**
 * The README's layer table ("Layout"), checked: `npm run lint:layers`, which CI (.ci/run) runs
 * before the tests. One rule per layer says what the layer may import from this repository
 * (packages from node_modules and Node built-ins are not layers: they are checked by the
 * package rules at the end); every import counts, `import type` and `import()` included.
 *
 * Bottom to top: wire; errors (the error catalogue, framework/errors.ts: every layer may import it,
 * and it imports only wire); context, transport, overload (pure); server, client; builtin (generated
 * code of the built-in services) and framework/runtime.ts; discovery and metrics (plug into the
 * client and server); framework/setup.ts (the composition root) and framework/index.ts; cli;
 * codegen stands alone; services use the framework's public API. examples/, test/ and bench/
 * may import anything and are not checked.
 */

/** Path patterns of the layers (paths relative to the repository root). */
const WIRE = '^framework/wire/';
const ERRORS = '^framework/errors\\.ts$';
const CONTEXT = '^framework/context/';
const TRANSPORT = '^framework/transport/';
const OVERLOAD = '^framework/overload/';
const TICKETS = '^framework/tickets/';
const SERVER = '^framework/server/';
const CLIENT = '^framework/client/';
const BUILTIN = '^framework/builtin/';
const RUNTIME = '^framework/runtime\\.ts$';
const DISCOVERY = '^framework/discovery/';
const METRICS = '^framework/metrics/';
const SETUP = '^framework/setup\\.ts$';
const FRAMEWORK_INDEX = '^framework/index\\.ts$';
const CLI = '^framework/cli/';
const CODEGEN = '^codegen/';
const SERVICES = '^services/';
const PACKAGE_INDEX = '^index\\.ts$';

/** Every module of the package's own code belongs to one of these. */
const PRODUCTION = '^(framework/|codegen/|services/|index\\.ts$)';
const LAYERS = [WIRE, ERRORS, CONTEXT, TRANSPORT, OVERLOAD, TICKETS, SERVER, CLIENT, BUILTIN, RUNTIME, DISCOVERY, METRICS, SETUP, FRAMEWORK_INDEX, CLI, CODEGEN, SERVICES, PACKAGE_INDEX];

/**
 * A rule "modules matching `from` may import, from this repository, only modules matching one
 * of `allowed`" (their own layer is always allowed).
 */
function layer(name, comment, from, allowed) {
  return {
    name,
    comment,
    severity: 'error',
    from: { path: from },
    to: { dependencyTypes: ['local'], pathNot: [from, ...allowed] },
  };
}

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment:
        'No import cycles, counting `import type` and `import()`: a cycle means two modules form one unit (and ESM may ' +
        'evaluate one of them half-initialised).',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    layer('layer-wire', 'wire (frame codec, header schema, status codes, definitions) is the bottom: pure, imports no other layer.', WIRE, []),
    layer(
      'layer-errors',
      'framework/errors.ts, the error catalogue, may import only wire (RpcError, Status); every framework layer may import it.',
      ERRORS,
      [WIRE],
    ),
    layer('layer-context', 'context (the AsyncLocalStorage call context) may import only wire and the error catalogue.', CONTEXT, [WIRE, ERRORS]),
    layer('layer-transport', 'transport (framed, multiplexed connections) may import only wire and the error catalogue.', TRANSPORT, [WIRE, ERRORS]),
    layer(
      'layer-overload',
      'overload (admission controller, adaptive throttle) is pure decision logic: it imports no other layer but the error catalogue.',
      OVERLOAD,
      [ERRORS],
    ),
    layer(
      'layer-tickets',
      'tickets (key rings, issuing and verifying tickets through fast-jwt) import no other layer.',
      TICKETS,
      [],
    ),
    layer(
      'layer-server',
      'server may import wire, the error catalogue, context, transport, overload, tickets and the generated code of the built-in services.',
      SERVER,
      [WIRE, ERRORS, CONTEXT, TRANSPORT, OVERLOAD, TICKETS, BUILTIN],
    ),
    layer(
      'layer-client',
      'client may import wire, the error catalogue, context, transport, overload, the generated code of the built-in services, and from ' +
        'discovery only the Instance type (discovery/instance.ts, a leaf). Registries and resolvers plug into the ' +
        'client through client/resolver.ts; the client never imports them (framework/setup.ts wires them up).',
      CLIENT,
      [WIRE, ERRORS, CONTEXT, TRANSPORT, OVERLOAD, BUILTIN, '^framework/discovery/instance\\.ts$'],
    ),
    layer('layer-builtin', "builtin (generated code of the built-in services) may import only framework/runtime.ts, like any generated code.", BUILTIN, [RUNTIME]),
    layer(
      'layer-runtime',
      'framework/runtime.ts (the names generated code imports) may import wire, the error catalogue, context and client.',
      RUNTIME,
      [WIRE, ERRORS, CONTEXT, CLIENT],
    ),
    layer(
      'layer-discovery',
      'discovery (registries and the resolvers over them) may import wire, the error catalogue and the resolver table it plugs into (client/resolver.ts).',
      DISCOVERY,
      [WIRE, ERRORS, '^framework/client/resolver\\.ts$'],
    ),
    {
      name: 'discovery-instance-is-a-leaf',
      comment: 'discovery/instance.ts (the Instance type) is imported by the client, so it imports nothing of the framework.',
      severity: 'error',
      from: { path: '^framework/discovery/instance\\.ts$' },
      to: { dependencyTypes: ['local'] },
    },
    layer(
      'layer-metrics',
      'metrics may import wire, the error catalogue and the client and server observer interfaces it implements.',
      METRICS,
      [WIRE, ERRORS, '^framework/client/observer\\.ts$', '^framework/server/observer\\.ts$'],
    ),
    layer(
      'layer-setup',
      'framework/setup.ts, the composition root, may import the implementations it registers (discovery, the health probe), the client tables they fill and the error catalogue.',
      SETUP,
      [ERRORS, DISCOVERY, '^framework/client/resolver\\.ts$', '^framework/client/health-probe\\.ts$'],
    ),
    layer('layer-framework-index', "framework/index.ts, the public API, may import every framework layer but the cli.", FRAMEWORK_INDEX, [
      WIRE, ERRORS, CONTEXT, TRANSPORT, OVERLOAD, TICKETS, SERVER, CLIENT, BUILTIN, RUNTIME, DISCOVERY, METRICS, SETUP,
    ]),
    layer('layer-cli', 'cli (the svrkit command) may import all of the framework, codegen and services.', CLI, ['^framework/', CODEGEN, SERVICES]),
    layer(
      'layer-codegen',
      'codegen (.proto -> TypeScript) stands alone: it imports nothing of the framework or services but the priority rules it checks options against.',
      CODEGEN,
      ['^framework/overload/priority\\.ts$'],
    ),
    layer(
      'layer-services',
      "services are built on the framework's public API only: framework/index.ts (generated code: framework/runtime.ts).",
      SERVICES,
      [FRAMEWORK_INDEX, RUNTIME],
    ),
    {
      name: 'paxoskv-core-is-pure',
      comment: 'services/paxoskv/core is the pure protocol (no I/O): it imports only itself.',
      severity: 'error',
      from: { path: '^services/paxoskv/core/' },
      to: { pathNot: '^services/paxoskv/core/' },
    },
    layer('layer-package-index', "index.ts, the package root, may import framework/index.ts and the services' clients.", PACKAGE_INDEX, [FRAMEWORK_INDEX, SERVICES]),
    {
      name: 'every-module-has-a-layer',
      comment: 'A new folder or root file under framework/ needs a layer rule here and a row in the README table.',
      severity: 'error',
      from: { path: PRODUCTION, pathNot: LAYERS },
      to: {},
    },
    {
      name: 'not-to-unresolvable',
      comment: 'Every import resolves (otherwise the rules above would not see it). Generated code comes from `npm run build`.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'not-to-dev-dep',
      comment: 'Shipped code imports no devDependency (users do not install them); type-only imports are erased.',
      severity: 'error',
      from: { path: PRODUCTION },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only', 'npm-peer'] },
    },
    {
      name: 'optional-peers-lazily',
      comment:
        'The optional peer dependencies (tsx, @bufbuild/buf, ts-proto, etcd3, @types/node) are the app\'s to install: ' +
        'shipped code loads them with import() when a command needs them, so svrkit runs without them.',
      severity: 'error',
      from: { path: PRODUCTION },
      to: { dependencyTypes: ['npm-peer'], dependencyTypesNot: ['dynamic-import', 'type-only', 'triple-slash-type-reference'] },
    },
    {
      name: 'no-non-package-json',
      comment: 'Every package imported is declared in package.json (not only present through another package).',
      severity: 'error',
      from: {},
      to: { dependencyTypes: ['npm-no-pkg', 'npm-unknown'], dependencyTypesNot: ['npm-peer'] },
    },
  ],
  required: [
    {
      name: 'entry-points-run-setup',
      comment:
        "The entry points run the composition root, so a channel made through 'svrkit' or the CLI " +
        'resolves file: and etcd: targets and openRegistry knows both kinds.',
      severity: 'error',
      module: { path: ['^framework/index\\.ts$', '^framework/cli/(main|registry)\\.ts$'] },
      to: { path: SETUP },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
