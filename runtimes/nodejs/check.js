'use strict';
// `node check.js FILE`: the syntax check run before a reload (the catalog's `check` step). It is
// `node --check FILE` with the headline first: "<file>:<line>: SyntaxError: <message>" (node's
// own report starts with a bare "<file>:<line>" and names the error four lines below). It compiles
// in this process (as `node --check` does, in the CommonJS wrapper) instead of spawning a second node.
const fs = require('fs');
const path = require('path');
const Module = require('module');
const vm = require('vm');

const file = process.argv[2];
// An ES module (its nearest package.json says "type": "module") is not compiled here, where the wrapper is
// CommonJS's: the server's load says what is wrong with it (Node 20.19 on requires it; Node 18 cannot, and says so).
if (esModule(file)) process.exit(0);
let source;
try {
  source = fs.readFileSync(file, 'utf-8');
} catch (err) {
  process.stderr.write(`${file}: ${err.message}\n`);
  process.exit(1);
}
try {
  // The wrapper adds no line, so line numbers are the file's own.
  new vm.Script(Module.wrap(source.replace(/^#!.*/, '')), { filename: file });
} catch (err) {
  if (!(err instanceof SyntaxError)) throw err;
  const report = String(err.stack).split('\n').filter((line) => !line.startsWith('    at ')); // not our frames
  process.stderr.write(`${report[0]}: SyntaxError: ${err.message}\n${report.join('\n')}\n`); // report[0]: "<file>:<line>"
  process.exit(1);
}

// Node's own rule: the type field of the nearest package.json above the file.
function esModule(name) {
  for (let dir = path.dirname(path.resolve(name)); ; dir = path.dirname(dir)) {
    try {
      return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf-8')).type === 'module';
    } catch (err) {
      if (err.code !== 'ENOENT') return false; // unreadable or not JSON: Node's load says so
    }
    if (path.dirname(dir) === dir) return false;
  }
}
