/**
 * Names: TypeScript names of protobuf types as ts-proto spells them, method names, module paths.
 */
import path from 'node:path';

/** The ts-proto options that change names and paths (a subset of the merged option map). */
export interface NamingOptions {
  /** ts-proto `fileSuffix`, added before `.ts` (default none). */
  readonly fileSuffix: string;
  /** ts-proto `importSuffix`, added to relative import specifiers (svrkit's default `.js`). */
  readonly importSuffix: string;
  /** ts-proto `useSnakeTypeName`: nested types are `Outer_Inner` (true, default) or `OuterInner`. */
  readonly useSnakeTypeName: boolean;
  /** ts-proto `snakeToCamel` contains `keys`: `foo_bar` type names become `fooBar`. */
  readonly snakeToCamelKeys: boolean;
  /** ts-proto `typePrefix`: prepended to every type name (default none). */
  readonly typePrefix: string;
  /** ts-proto `typeSuffix`: appended to every type name (default none). */
  readonly typeSuffix: string;
  /** ts-proto `messagePrefix`: prepended to message names, inside `typePrefix` (default none). */
  readonly messagePrefix: string;
  /** ts-proto `messageSuffix`: appended to message names, inside `typeSuffix` (default none). */
  readonly messageSuffix: string;
}

/** Reads the naming options out of a merged ts-proto option map (see plugin.ts). */
export function namingOptions(options: ReadonlyMap<string, string>): NamingOptions {
  const snake = options.get('snakeToCamel');
  return {
    fileSuffix: options.get('fileSuffix') ?? '',
    importSuffix: options.get('importSuffix') ?? '',
    useSnakeTypeName: options.get('useSnakeTypeName') !== 'false',
    snakeToCamelKeys: snake === undefined || snake === 'true' || (snake !== 'false' && snake.split('_').includes('keys')),
    typePrefix: options.get('typePrefix') ?? '',
    typeSuffix: options.get('typeSuffix') ?? '',
    messagePrefix: options.get('messagePrefix') ?? '',
    messageSuffix: options.get('messageSuffix') ?? '',
  };
}

/**
 * The TypeScript name ts-proto gives a message, from its name path inside the file
 * (`['Outer', 'Middle', 'Inner']` -> `Outer_Middle_Inner`). Mirrors ts-proto's visit.ts.
 */
export function messageTsName(namePath: readonly string[], o: NamingOptions): string {
  let prefix = '';
  let name = '';
  for (const part of namePath) {
    name = prefix + (o.snakeToCamelKeys && part.includes('_') ? snakeToCamel(part) : part);
    prefix = name + (o.useSnakeTypeName ? '_' : '');
  }
  const wrapped = o.typePrefix + o.messagePrefix + name + o.messageSuffix + o.typeSuffix;
  return wrapped === 'Date' || wrapped === 'Function' ? `${wrapped}Message` : wrapped;
}

/** ts-proto's snakeToCamel (case.ts). */
function snakeToCamel(s: string): string {
  const hasLowerCase = /[a-z]/.test(s);
  return s
    .split('_')
    .map((word, i) => {
      const w = hasLowerCase ? word : word.toLowerCase();
      return i === 0 ? w : w.charAt(0).toUpperCase() + w.slice(1);
    })
    .join('');
}

/**
 * The camelCase name of an rpc, used for handler and client methods: `SayHello` -> `sayHello`,
 * `say_hello` -> `sayHello`, `HTTPGet` -> `httpGet`, `GetHTTPStatus` -> `getHTTPStatus`, `ID` -> `id`.
 * A leading run of capitals is lowered, except its last letter when a lowercase letter follows it.
 */
export function methodLocalName(rpcName: string): string {
  const hasLowerCase = /[a-z]/.test(rpcName);
  const words = rpcName.split('_').filter((w) => w.length > 0);
  return words
    .map((word, i) => {
      const w = hasLowerCase ? word : word.toLowerCase();
      if (i > 0) return w.charAt(0).toUpperCase() + w.slice(1);
      const run = /^[A-Z]+/.exec(w)?.[0].length ?? 0;
      const lower = run > 1 && run < w.length && /[a-z]/.test(w.charAt(run)) ? run - 1 : run;
      return w.slice(0, lower).toLowerCase() + w.slice(lower);
    })
    .join('');
}

/** The output path of a .proto file's module, relative to the out dir: `a/b.proto` -> `a/b.ts`. */
export function outputPath(protoName: string, o: NamingOptions): string {
  return protoName.replace(/\.proto$/, '') + o.fileSuffix + '.ts';
}

/** The import specifier that `fromOutput` uses for `toOutput` (both out-dir-relative `.ts` paths). */
export function moduleSpecifier(fromOutput: string, toOutput: string, o: NamingOptions): string {
  const rel = path.posix.relative('/' + path.posix.dirname(fromOutput), '/' + toOutput.replace(/\.ts$/, ''));
  return (rel.startsWith('.') ? rel : `./${rel}`) + o.importSuffix;
}

/**
 * The runtime import specifier as seen from one generated file. A bare specifier (`'svrkit'`) is
 * used as is; a relative one (`'./'`, `'../'`) is relative to the out dir and is rewritten for
 * files in subdirectories of it.
 */
export function runtimeSpecifier(runtimeImport: string, fromOutput: string): string {
  if (!runtimeImport.startsWith('./') && !runtimeImport.startsWith('../')) return runtimeImport;
  const dir = path.posix.dirname(fromOutput);
  const depth = dir === '.' ? 0 : dir.split('/').length;
  const spec = path.posix.normalize('../'.repeat(depth) + runtimeImport);
  return spec.startsWith('.') ? spec : `./${spec}`;
}
