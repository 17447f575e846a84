/**
 * Include dirs (nested ones, the default of "each file's own dir") and the naming rules.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { planWorkspace } from '../../codegen/compile.js';
import { generate } from '../../codegen/index.js';
import { messageTsName, methodLocalName, moduleSpecifier, namingOptions, runtimeSpecifier } from '../../codegen/naming.js';
import { protos, sharedDir, tempDir } from './helpers.js';

const tmp = tempDir('include');
afterAll(() => tmp.cleanup());
const nested = path.join(protos, 'nested');
const vendor = path.join(nested, 'vendor');
const app = path.join(nested, 'app', 'app.proto');
const dep = path.join(vendor, 'acme', 'dep.proto');
const rel = (out: string, files: string[]) => files.map((f) => path.relative(out, f).split(path.sep).join('/')).sort();

describe('two include dirs, one nested in the other', () => {
  it('plans one module per dir, the outer one excluding the nested one', () => {
    const plan = planWorkspace([app], [nested, vendor]);
    expect(plan.modules.map((m) => m.excludes)).toEqual([['m0/vendor'], []]);
    expect(plan.inputs).toEqual([{ file: app, module: 0, name: 'app/app.proto' }]);
    // A file under the nested dir belongs to it, whatever the order of the dirs.
    expect(planWorkspace([dep], [nested, vendor]).inputs).toEqual([{ file: dep, module: 1, name: 'acme/dep.proto' }]);
    expect(planWorkspace([dep, app], [vendor, nested]).inputs.map((i) => [i.module, i.name])).toEqual([
      [0, 'acme/dep.proto'],
      [1, 'app/app.proto'],
    ]);
  });

  for (const order of [
    [nested, vendor],
    [vendor, nested],
  ]) {
    it(`generates a file that imports from the nested dir (-I ${order.map((d) => path.basename(d)).join(' -I ')})`, async () => {
      const out = path.join(tmp.dir, `nested-${path.basename(order[0]!)}`);
      const result = await generate({ files: [app, dep], outDir: out, includeDirs: order });
      expect(rel(out, result.written)).toEqual(['acme/dep.ts', 'app/app.ts']);
      const src = readFileSync(path.join(out, 'app', 'app.ts'), 'utf8');
      expect(src).toMatch(/^import \{ Widget \} from '\.\.\/acme\/dep\.js';$/m);
      expect(src).toContain('  abstract getWidget(request: GetWidgetRequest, call: CallContext): Promise<DeepPartial<Widget>>;');
      expect(src).toContain("      responseTypeName: 'acme.Widget',");
      expect(readFileSync(path.join(out, 'acme', 'dep.ts'), 'utf8')).toContain('weightGrams: bigint;');
    });
  }
});

describe('without include dirs', () => {
  it("each file's own directory is its include dir", async () => {
    const out = path.join(tmp.dir, 'own-dir');
    const result = await generate({ files: [path.join(sharedDir, 'common', 'v1', 'money.proto')], outDir: out });
    expect(rel(out, result.written)).toEqual(['money.ts']);
    expect(readFileSync(path.join(out, 'money.ts'), 'utf8')).toContain('export const protobufFileName = "money.proto";');
  });

  it('files in different dirs each get their own', () => {
    const plan = planWorkspace([path.join(sharedDir, 'common', 'v1', 'money.proto'), dep]);
    expect(plan.inputs.map((i) => i.name)).toEqual(['money.proto', 'dep.proto']);
    expect(plan.modules.map((m) => m.dir)).toEqual([path.join(sharedDir, 'common', 'v1'), path.join(vendor, 'acme')]);
  });
});

describe('naming', () => {
  it('camelCases rpc names', () => {
    expect(methodLocalName('SayHello')).toBe('sayHello');
    expect(methodLocalName('say_hello')).toBe('sayHello');
    expect(methodLocalName('get_item_by_id')).toBe('getItemById');
    expect(methodLocalName('SAY_HELLO')).toBe('sayHello');
    expect(methodLocalName('HTTPGet')).toBe('httpGet');
    expect(methodLocalName('GetHTTPStatus')).toBe('getHTTPStatus');
    expect(methodLocalName('ID')).toBe('id');
    expect(methodLocalName('Now')).toBe('now');
    expect(methodLocalName('x')).toBe('x');
  });

  it('names messages as ts-proto does', () => {
    const o = namingOptions(new Map());
    expect(messageTsName(['Outer', 'Middle', 'Inner'], o)).toBe('Outer_Middle_Inner');
    expect(messageTsName(['Date'], o)).toBe('DateMessage');
    expect(messageTsName(['snake_name'], o)).toBe('snakeName');
    expect(messageTsName(['Outer', 'Inner'], namingOptions(new Map([['useSnakeTypeName', 'false']])))).toBe('OuterInner');
    expect(messageTsName(['Foo'], namingOptions(new Map([['messageSuffix', 'Msg']])))).toBe('FooMsg');
  });

  it('builds import specifiers between generated files and to the runtime', () => {
    const o = namingOptions(new Map([['importSuffix', '.js']]));
    expect(moduleSpecifier('helloworld/echo.ts', 'helloworld/greeter.ts', o)).toBe('./greeter.js');
    expect(moduleSpecifier('helloworld/echo.ts', 'common/v1/money.ts', o)).toBe('../common/v1/money.js');
    expect(moduleSpecifier('top.ts', 'a/b.ts', o)).toBe('./a/b.js');
    expect(runtimeSpecifier('svrkit', 'a/b/c.ts')).toBe('svrkit');
    expect(runtimeSpecifier('../../index.js', 'health.ts')).toBe('../../index.js');
    expect(runtimeSpecifier('../../index.js', 'grpc/health/v1/health.ts')).toBe('../../../../../index.js');
    expect(runtimeSpecifier('./rt.js', 'a/x.ts')).toBe('../rt.js');
    expect(runtimeSpecifier('./rt.js', 'x.ts')).toBe('./rt.js');
  });
});
