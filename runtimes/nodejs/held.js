'use strict';
// A held start of the server (argv[2], kubeless.js): `run`'s head start (kubeless_local/emulator/headstart.py).
// Node boots (and the first worker thread with it) while the engine prepares the function; the rest arrives on
// stdin as one JSON line,
// {env, cwd}: the server's whole env and working folder. Then the server runs as if started with them.
// The end of stdin without it (`run` ended first, or did not need this server): exit.
const fs = require('fs');
const path = require('path');
const Module = require('module');
// what the server loads first, loaded while waiting
require('http');
require('v8');
require('vm');
performance.now(); // the global `performance` loads its module on first use: the first call's timing, else
const { Worker } = require('worker_threads');
// and the function's first worker thread (worker.js), booted while waiting: it waits for its data and env in its
// turn (kubeless.js startedWorker() hands them over and keeps the process alive for it). Unclaimed (another
// server), it keeps nothing alive and ends with this process.
const wake = new Int32Array(new SharedArrayBuffer(8));
const worker = new Worker(path.join(__dirname, 'worker.js'), { workerData: { wake } });
worker.unref();
globalThis.kubelessLocalWorker = { worker, wake };

const pause = new Int32Array(new SharedArrayBuffer(4)); // Atomics.wait on it: a sleep of this thread

function readLine() {
  const chunk = Buffer.alloc(1 << 16);
  let text = '';
  for (;;) {
    let n;
    try {
      n = fs.readSync(0, chunk, 0, chunk.length, null);
    } catch (err) {
      if (err.code === 'EAGAIN') { // a stdin that does not block: nothing yet, look again soon (not at once)
        Atomics.wait(pause, 0, 0, 5);
        continue;
      }
      if (err.code === 'EOF') return text;
      throw err;
    }
    if (n === 0) return text;
    text += chunk.toString('utf8', 0, n);
    if (text.includes('\n')) return text;
  }
}

const line = readLine();
if (!line.trim()) process.exit(0);
const { env, cwd } = JSON.parse(line);
for (const name of Object.keys(process.env)) if (!(name in env)) delete process.env[name];
Object.assign(process.env, env);
Module._initPaths(); // NODE_PATH is read when node starts: read it again
process.chdir(cwd);
const server = path.resolve(process.argv[2]);
process.argv.splice(1, 1); // argv[1] is the server, as a fresh start has it
require(server);
