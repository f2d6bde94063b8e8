'use strict';
// `node check.js FILE`: the syntax check run before a reload (the catalog's `check` step). It is
// `node --check FILE` with the headline first: "<file>:<line>: SyntaxError: <message>" (node's
// own report starts with a bare "<file>:<line>" and names the error four lines below).
const { spawnSync } = require('child_process');

const file = process.argv[2];
const done = spawnSync(process.execPath, ['--check', file], { encoding: 'utf-8' });
if (done.status !== 0) {
  const report = `${done.stderr || ''}${done.stdout || ''}`;
  const lines = report.split('\n');
  const error = lines.find((line) => /^[A-Z]\w*Error\b/.test(line));
  process.stderr.write(error ? `${lines[0]}: ${error}\n${report}` : report);
}
process.exit(done.status === null ? 1 : done.status);
