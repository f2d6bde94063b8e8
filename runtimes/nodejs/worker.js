'use strict';
// Runs the user's function inside a worker thread so that the server (kubeless.js) can stop it
// with worker.terminate() even when it spins in a synchronous loop. Each call is dispatched
// through a real Express app in this thread, so event.extensions.request / response are genuine
// Express request / response objects; the response is captured and sent back to the server,
// which replays status, headers and body on the client's socket.
const http = require('http');
const path = require('path');
const { createRequire } = require('module');
const { parentPort, workerData } = require('worker_threads');

// V8's gc (kubeless.js exposed it), used after a call with a big body and hidden from the function.
const BIG_BODY = 8 * 1024 * 1024;
const collectGarbage = globalThis.gc;
globalThis.gc = undefined; // not configurable: it stays a property, without the function
let releaseTimer = null;
function releaseSoon() { // 100 ms after the last big call: its buffers are garbage by then
  clearTimeout(releaseTimer);
  if (collectGarbage) releaseTimer = setTimeout(collectGarbage, 100);
}

const rtRequire = workerData.runtimeLib
  ? createRequire(path.join(workerData.runtimeLib, 'package.json'))
  : require;
const express = rtRequire('express');

const { modPath, modName, funcHandler } = workerData;
const context = {
  'function-name': funcHandler,
  timeout: workerData.timeout,
  runtime: workerData.runtime,
  'memory-limit': workerData.memoryLimit,
};

// Where a load error happened, as file:line, for the `load-failed` control line.
function describeLoadError(err) {
  if (!err || typeof err !== 'object') return String(err);
  const stack = String(err.stack || '');
  // Drop the runtime itself from "Require stack" lists.
  const msg = String(err.message).split('\n').filter((l) => !l.includes(__filename)).join('\n');
  const head = `${err.name || 'Error'}: ${msg}`;
  // SyntaxError stacks start with "<file>:<line>" followed by the offending source line.
  const first = stack.split('\n')[0];
  if (/^\/.*:\d+$/.test(first)) return `${first}: ${head}`;
  const dir = path.dirname(modPath);
  for (const line of stack.split('\n')) {
    const m = line.match(/\(?((?:file:\/\/)?\/[^()\s]+):(\d+):\d+\)?\s*$/);
    if (m && m[1].replace('file://', '').startsWith(dir)) return `${m[1]}:${m[2]}: ${head}`;
  }
  return `${modPath}: ${head}`;
}

let func;
try {
  const mod = require(modPath);
  // module.exports may be the function itself or an object keyed by FUNC_HANDLER (as Kubeless).
  if (typeof mod === 'function') func = mod;
  else if (mod && typeof mod === 'object' && typeof mod[funcHandler] === 'function') func = mod[funcHandler];
  else throw new Error(`${modName}.js does not export a function named '${funcHandler}'`);
} catch (err) {
  parentPort.postMessage({ t: 'load-failed', error: describeLoadError(err) });
  // Let the message flush, then end this thread: the server decides what to do.
  setImmediate(() => process.exit(1));
  func = null;
}

// What the function writes is kept instead of going to a socket. These are own properties of the
// response: Express' init middleware swaps the prototype to its own response prototype.
const capture = {
  writeHead(status, reason, headers) {
    if (this._header) throw Object.assign(new Error('Cannot write headers after they are sent to the client'), { code: 'ERR_HTTP_HEADERS_SENT' });
    if (typeof reason !== 'string') { headers = reason; reason = undefined; }
    this.statusCode = status;
    if (reason) this.statusMessage = reason;
    if (Array.isArray(headers)) {
      for (let i = 0; i + 1 < headers.length; i += 2) this.appendHeader(headers[i], headers[i + 1]);
    } else if (headers) {
      for (const k of Object.keys(headers)) this.setHeader(k, headers[k]);
    }
    this._header = true; // marks headersSent; setHeader now throws as on a real socket
    return this;
  },

  write(chunk, encoding, cb) {
    if (typeof encoding === 'function') { cb = encoding; encoding = undefined; }
    if (this.finished) return false;
    if (!this._header) this.writeHead(this.statusCode);
    if (chunk != null && chunk.length) {
      this.klChunks.push(typeof chunk === 'string' ? Buffer.from(chunk, encoding) : Buffer.from(chunk));
    }
    if (cb) process.nextTick(cb);
    return true;
  },

  end(chunk, encoding, cb) {
    if (typeof chunk === 'function') { cb = chunk; chunk = undefined; }
    else if (typeof encoding === 'function') { cb = encoding; encoding = undefined; }
    if (this.finished) { if (cb) process.nextTick(cb); return this; }
    if (chunk != null) this.write(chunk, encoding);
    else if (!this._header) this.writeHead(this.statusCode);
    this.finished = true;
    send(this);
    process.nextTick(() => { this.emit('prefinish'); this.emit('finish'); if (cb) cb(); });
    return this;
  },
};

function capturedResponse(req, id) {
  const res = new http.ServerResponse(req);
  res.klId = id;
  res.klChunks = [];
  res.klFailed = false;
  res.klClientError = false;
  res.klSent = false;
  return Object.assign(res, capture);
}

function send(res) {
  if (res.klSent) return;
  res.klSent = true;
  const headers = [];
  for (const name of res.getRawHeaderNames()) headers.push(name, res.getHeader(name));
  const body = res.klChunks.length === 1 ? res.klChunks[0] : Buffer.concat(res.klChunks);
  parentPort.postMessage({
    t: 'res', id: res.klId, status: res.statusCode, reason: res.statusMessage,
    headers, body, failed: res.klFailed, clientError: res.klClientError, log: res.klLog,
  });
}

// The error's stack without the runtime's own frames (Express, this file, Node internals).
function userStack(err) {
  if (!err || !err.stack) return String(err);
  const skip = [__dirname, workerData.runtimeLib || __dirname, 'node:internal'];
  return String(err.stack).split('\n').filter((l) => !/^\s+at /.test(l) || !skip.some((p) => l.includes(p))).join('\n');
}

// The error goes to the server thread with the answer, which logs it before replying (a
// console.error here would travel through the worker's stdio pipe and could arrive later).
function fail(err, req, res) {
  const log = `Function failed to execute: ${userStack(err)}\n`;
  if (res.klSent) {
    // The function answered and then failed: count the failure anyway.
    parentPort.postMessage({ t: 'failed', method: req.method, log });
    return;
  }
  res.klFailed = true;
  res.klLog = log;
  if (res._header) { res.end(); return; }
  res.status(500).send('Internal Server Error');
}

// Kubeless' return conversions (stable/nodejs kubeless.js modFinalize).
function finalize(result, res) {
  if (res.finished) return;
  switch (typeof result) {
    case 'string': res.end(result); break;
    case 'object': res.json(result); break; // objects, arrays and null
    case 'undefined': res.end(); break;
    default: res.end(JSON.stringify(result));
  }
}

// The caller's mistake (400, as body-parser and Express answer it): not a failure of the function.
function clientError(res, message) {
  res.klClientError = true;
  res.status(400).send(`Bad Request: ${message}`);
}

function call(req, res) {
  const body = req.klBody;
  const multipart = req.is('multipart/*');
  req.body = body.length > 0 && !multipart ? body : {};
  let data = req.body;
  if (body.length > 0 && !multipart) {
    try {
      data = req.is('application/json') ? JSON.parse(body.toString('utf-8')) : body.toString('utf-8');
    } catch (err) {
      clientError(res, `invalid JSON: ${err.message}`);
      return;
    }
  }
  new Promise((resolve) => {
    const event = {
      data,
      'event-id': req.get('event-id'),
      'event-type': req.get('event-type'),
      'event-time': req.get('event-time'),
      'event-namespace': req.get('event-namespace'),
      extensions: { request: req, response: res },
    };
    resolve(func(event, context));
  })
    .then((result) => finalize(result, res))
    .catch((err) => fail(err, req, res));
}

const app = express();
app.disable('x-powered-by'); // the server thread adds it to every answer
app.all('*', call);
// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => (err.status === 400 ? clientError(res, err.message) : fail(err, req, res)));

function makeSocket(m) {
  return {
    remoteAddress: m.remoteAddress, remotePort: m.remotePort,
    localAddress: m.localAddress, localPort: m.localPort,
    encrypted: false, readable: false, writable: false,
    on() { return this; }, once() { return this; }, removeListener() { return this; },
    destroy() {}, setTimeout() { return this; },
  };
}

function handle(m) {
  const req = new http.IncomingMessage(makeSocket(m));
  req.method = m.method;
  req.url = m.url;
  req.httpVersion = m.httpVersion;
  req.httpVersionMajor = m.httpVersionMajor;
  req.httpVersionMinor = m.httpVersionMinor;
  req.headers = m.headers;
  req.rawHeaders = m.rawHeaders;
  req.complete = true;
  const body = m.body ? Buffer.from(m.body.buffer, m.body.byteOffset, m.body.byteLength) : Buffer.alloc(0);
  req.klBody = body;
  // The body is also readable as a stream (e.g. multipart parsers reading the request).
  if (body.length) req.push(body);
  req.push(null);
  const res = capturedResponse(req, m.id);
  if (body.length >= BIG_BODY) res.once('finish', releaseSoon);
  app(req, res);
}

if (func) {
  parentPort.on('message', (m) => {
    // Claim the call first: the server takes back calls this thread was too busy to start.
    if (m.t === 'call') { if (Atomics.compareExchange(m.claim, 0, 0, 1) === 0) handle(m); }
    else if (m.t === 'ping') parentPort.postMessage({ t: 'pong' });
  });
  parentPort.postMessage({ t: 'loaded' });
}
