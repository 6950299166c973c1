// Runs a wasm32-wasip1 program under Node's V8 (scripts/bench/run.py, the
// filter's hot paths). The filter's proxy-wasm imports are never called by
// the program; they are stubbed so that the module links.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const wasi = new WASI({ version: 'preview1', args: [], env: {} });
const module = await WebAssembly.compile(await readFile(process.argv[2]));
const imports = wasi.getImportObject();
imports.env = {};
for (const i of WebAssembly.Module.imports(module)) {
  if (i.module === 'env') imports.env[i.name] = () => 0;
}
const instance = await WebAssembly.instantiate(module, imports);
// The cdylib's crate also exports _initialize; WASI.start wants _start only.
wasi.start({ exports: { memory: instance.exports.memory, _start: instance.exports._start } });
