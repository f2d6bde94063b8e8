'use strict';
// Runs the user's function inside a worker thread so that the server (kubeless.js) can stop it
// with worker.terminate() even when it spins in a synchronous loop. event.extensions.request /
// response are genuine Express request / response objects, built the first time the function reads
// them (or when its result needs Express: an object for res.json, a failure for the 500 page);
// most functions never read them, and a call that does not need Express costs a fraction of one
// routed through it. The response is captured and sent back to the server, which replays status,
// headers and body on the client's socket.
const http = require('http');
const path = require('path');
const { createRequire } = require('module');
const { parentPort, workerData: given, receiveMessageOnPort } = require('worker_threads');

// A worker started ahead (held.js: before the server's env and function are known) waits here, its Node booted
// and the modules above loaded, until the server hands it its data and env (kubeless.js startedWorker()).
const workerData = given.wake ? awaitStart(given.wake) : given;
function awaitStart(wake) {
  Atomics.wait(wake, 0, 0);
  let got;
  while (!(got = receiveMessageOnPort(parentPort))) Atomics.wait(wake, 1, 0, 1); // posted before the wake-up
  const { data, env } = got.message;
  for (const name of Object.keys(process.env)) if (!(name in env)) delete process.env[name];
  Object.assign(process.env, env);
  require('module')._initPaths(); // NODE_PATH as a worker started with this env reads it
  return data;
}

// This thread's id in the kernel (Linux, else 0): the processes it starts are listed as its children, apart from the
// other threads' (kubeless.js stops them with a stuck worker).
function osThreadId() {
  try {
    return Number(require('fs').readlinkSync('/proc/thread-self').split('/').pop()) || 0;
  } catch {
    return 0;
  }
}

// V8's gc, used after a call with a big body and hidden from the function: exposed by the first such call
// (kubeless.js says why not at the start); a worker started after it finds it as a global.
const BIG_BODY = 8 * 1024 * 1024;
let gc = globalThis.gc || null;
if ('gc' in globalThis) globalThis.gc = undefined; // not configurable: it stays a property, without the function
function collectGarbage() {
  if (!gc) {
    require('v8').setFlagsFromString('--expose-gc');
    gc = require('vm').runInNewContext('gc');
  }
  gc();
}
let releaseTimer = null;
function releaseSoon() { // 100 ms after the last big call: its buffers are garbage by then
  clearTimeout(releaseTimer);
  releaseTimer = setTimeout(collectGarbage, 100);
}

const rtRequire = workerData.runtimeLib
  ? createRequire(path.join(workerData.runtimeLib, 'package.json'))
  : require;
// Express and what this file takes of its modules are loaded by the first call that needs them:
// loading Express was most of a worker's start, paid again by every save (a new worker).
const expressRequire = createRequire(rtRequire.resolve('express')); // Express' own dependencies
let typeis = null; // what Express' req.is() runs: for calls with a body
function typeIs() { return typeis || (typeis = expressRequire('type-is')); }
let weakETag = null; // Express' default `etag fn` ('weak'), for an object's JSON answered without Express
function etagOf(body) { // a string: hashed as its utf-8 bytes, as Express hashes the Buffer it makes of it
  if (!weakETag) { const etag = expressRequire('etag'); weakETag = (entity) => etag(entity, { weak: true }); }
  return weakETag(body);
}
// The claim words of this worker's calls (kubeless.js): +id posted, -id started here, 0 taken back.
// The word after them counts the calls taken from messages (the server watches it move).
const { claims } = workerData;
const SEEN = claims.length - 1;
const NO_HEADERS = [];
const JSON_TYPE = 'application/json; charset=utf-8'; // res.json's Content-Type, its charset added by res.set

// What goes to the server goes in batches: everything sent while this turn's microtasks run (the
// answers of the calls of one message, most often) is one message. In order; bodies handed over.
let outbox = [];
let handedOver = [];
function out(m, buffer) {
  if (!outbox.length) queueMicrotask(sendOut);
  outbox.push(m);
  if (buffer) handedOver.push(buffer);
}
function sendOut() {
  if (!outbox.length) return; // sent already: the function's output sends what is waiting at once
  const batch = outbox;
  const buffers = handedOver;
  outbox = [];
  handedOver = [];
  parentPort.postMessage(batch, buffers);
}

// The function's output (console.log, process.stdout.write…) goes to the server thread with the answers, in order,
// and at once (a call stuck in a loop after it printed still shows what it printed): the server writes it after
// the access lines of the answers before it. Through the worker's stdio pipe it could arrive after its own call's
// access line, or a later call's before it, and a call's record (the lines up to its access line) held another's.
function relayOutput(stream, fd) {
  stream.write = (chunk, encoding, callback) => {
    const done = typeof encoding === 'function' ? encoding : callback;
    const enc = typeof encoding === 'string' ? encoding : 'utf8';
    // a string as it is; bytes (or a string in another encoding: hex, base64) as a copy of its bytes
    const data = typeof chunk === 'string' && /^utf-?8$/i.test(enc) ? chunk : new Uint8Array(Buffer.from(chunk, enc));
    out({ t: 'out', fd, data });
    sendOut();
    if (done) process.nextTick(done);
    return true;
  };
}
relayOutput(process.stdout, 1);
relayOutput(process.stderr, 2);

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
  if (err.code === 'ERR_REQUIRE_ESM' && String(err.message).includes(` from ${__filename} `)) {
    // the function's own file (not a module it requires): the message is advice to this file, not to the user
    return `${modPath}: the function is an ES module ("type": "module" in its package.json), which this Node.js `
      + 'cannot require(), and Kubeless loads functions with require(): write it as CommonJS '
      + '(module.exports = { handler }, require() for its modules)';
  }
  const stack = String(err.stack || '');
  // Drop the runtime itself from "Require stack" lists (its lines there start with "- ").
  const msg = String(err.message).split('\n').filter((l) => !(l.startsWith('- ') && l.includes(__filename))).join('\n');
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
  out({ t: 'load-failed', error: describeLoadError(err) });
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
    this.klWrite(chunk, encoding);
    streamSoon(this);
    if (cb) process.nextTick(cb);
    return true;
  },

  klWrite(chunk, encoding) {
    if (!this._header) this.writeHead(this.statusCode);
    if (chunk != null && chunk.length) {
      this.klChunks.push(typeof chunk === 'string' ? Buffer.from(chunk, encoding) : Buffer.from(chunk));
    }
  },

  flushHeaders() {
    if (this.finished) return;
    if (!this._header) this.writeHead(this.statusCode);
    streamSoon(this);
  },

  end(chunk, encoding, cb) {
    if (typeof chunk === 'function') { cb = chunk; chunk = undefined; }
    else if (typeof encoding === 'function') { cb = encoding; encoding = undefined; }
    if (this.finished) { if (cb) process.nextTick(cb); return this; }
    if (chunk != null) this.klWrite(chunk, encoding);
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
  res.klHeadSent = false;
  res.klStreaming = false;
  return Object.assign(res, capture);
}

// The answer, or (`more`) the piece written so far of an answer that goes on: the status and headers go with the
// first piece, the server writes each piece to the caller as it comes (a streamed answer, as Kubeless' Express
// writes to the socket). An answer ended in the turn it began (most) is one message.
function send(res, more = false) {
  if (res.klSent) return;
  if (!more) res.klSent = true;
  const headers = [];
  if (!res.klHeadSent) for (const name of res.getRawHeaderNames()) headers.push(name, res.getHeader(name));
  res.klHeadSent = true;
  // A body of its own memory, handed over: a small Buffer is a view of an 8 KB pool, which a
  // message would copy whole.
  let size = 0;
  for (const c of res.klChunks) size += c.length;
  const body = new Uint8Array(size);
  let at = 0;
  for (const c of res.klChunks) { body.set(c, at); at += c.length; }
  res.klChunks = [];
  out([res.klId, res.statusCode, res.statusMessage, headers, body, res.klFailed, res.klClientError, res.klLog, more],
    body.buffer);
}

// What the function writes before it ends the answer (res.write, res.flushHeaders) leaves at the end of this turn
// of the event loop, as one piece, unless the answer ended meanwhile.
function streamSoon(res) {
  if (res.klStreaming) return;
  res.klStreaming = true;
  setImmediate(() => {
    res.klStreaming = false;
    send(res, true);
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
    out({ t: 'failed', method: req.method, log });
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

function makeSocket(m) {
  return {
    remoteAddress: m.remoteAddress, remotePort: m.remotePort,
    localAddress: m.localAddress, localPort: m.localPort,
    encrypted: false, readable: false, writable: false,
    on() { return this; }, once() { return this; }, removeListener() { return this; },
    destroy() {}, setTimeout() { return this; },
  };
}

// One call: the event from the server's message; Express' request and response once needed.
class Call {
  constructor(m) {
    this.m = m;
    this.body = m.body ? Buffer.from(m.body.buffer, m.body.byteOffset, m.body.byteLength) : Buffer.alloc(0);
    this.req = null;
    this.res = null;
    this.answered = false; // by reply(), without Express
    this.reqBody = undefined;
  }

  // Express' request and response, routed through the app (which sets their prototypes, req.query,
  // req.params...); `start`: the route then runs the function (a path Express cannot decode is the
  // caller's 400 before it).
  express(start = false) {
    if (this.req) return this;
    const { m, body } = this;
    const req = new http.IncomingMessage(makeSocket(m));
    req.method = m.method;
    req.url = m.url;
    req.httpVersion = m.httpVersion;
    req.httpVersionMajor = m.httpVersionMajor;
    req.httpVersionMinor = m.httpVersionMinor;
    req.headers = m.headers;
    req.rawHeaders = m.rawHeaders;
    req.complete = true;
    // The body is also readable as a stream (e.g. multipart parsers reading the request).
    if (body.length) req.push(body);
    req.push(null);
    const res = capturedResponse(req, m.id);
    if (this.answered) { res.klSent = true; res.finished = true; } // built after the answer went
    else if (body.length >= BIG_BODY) res.once('finish', releaseSoon);
    this.req = req;
    this.res = res;
    req.klBody = body;
    req.klReqBody = this.reqBody;
    req.klCall = start ? this : null;
    expressApp()(req, res); // Express routes synchronously: `route` below has run when it returns
    return this;
  }

  start() {
    const { body } = this;
    const { headers } = this.m;
    const multipart = body.length > 0 && typeIs().is(headers['content-type'], ['multipart/*']);
    // req.body (the route set it where Express came first); event.data too unless parsed below
    this.reqBody = this.req ? this.req.body : (body.length > 0 && !multipart ? body : {});
    let data = this.reqBody;
    if (body.length > 0 && !multipart) {
      try {
        data = typeIs().is(headers['content-type'], ['application/json']) ? JSON.parse(body.toString('utf-8')) : body.toString('utf-8');
      } catch (err) {
        clientError(this.express().res, `invalid JSON: ${err.message}`);
        return;
      }
    }
    const call = this;
    new Promise((resolve) => {
      const event = {
        data,
        // req.get(name) of Express: the header under its lower-case name
        'event-id': headers['event-id'],
        'event-type': headers['event-type'],
        'event-time': headers['event-time'],
        'event-namespace': headers['event-namespace'],
        extensions: call.req ? { request: call.req, response: call.res } : lazyExtensions(call),
      };
      resolve(func(event, context));
    })
      .then((result) => call.finish(result))
      .catch((err) => call.fail(err));
  }

  finish(result) {
    if (this.res) { finalize(result, this.res); return; }
    switch (typeof result) { // the conversions of finalize() that need no Express
      case 'string': this.reply(result); break;
      case 'undefined': this.reply(''); break;
      case 'number': case 'boolean': this.reply(JSON.stringify(result)); break;
      default: if (!this.replyJSON(result)) finalize(result, this.express().res);
    }
  }

  // What res.json(result) answers through Express here (express/lib/response.js: json, then send), where
  // no conditional header can make it a 304 and it is not a HEAD: its JSON as utf-8, with Content-Type,
  // Content-Length and the weak ETag, set in that order. False (nothing sent) where Express must answer.
  replyJSON(result) {
    const { headers, method } = this.m;
    if (method === 'HEAD' || headers['if-none-match'] || headers['if-modified-since']) return false;
    let json;
    try {
      json = JSON.stringify(result);
    } catch (err) {
      return false; // Express throws the same: the call fails there
    }
    if (typeof json !== 'string') return false; // a toJSON() that returns undefined: Express sends no body
    const length = String(Buffer.byteLength(json));
    this.reply(json, ['Content-Type', JSON_TYPE, 'Content-Length', length, 'ETag', etagOf(json)]);
    return true;
  }

  fail(err) {
    this.express();
    fail(err, this.req, this.res);
  }

  // What res.end(body) answers through Express here: 200, no headers of its own (or `headers`: name, value, ...).
  reply(body, headers = NO_HEADERS) {
    this.answered = true;
    out([this.m.id, 200, undefined, headers, body, false, false, undefined]);
    if (this.body.length >= BIG_BODY) releaseSoon();
  }
}

// event.extensions whose request and response are built on first use, then plain properties.
function lazyExtensions(call) {
  const ext = {
    get request() { return built().request; },
    set request(v) { built().request = v; },
    get response() { return built().response; },
    set response(v) { built().response = v; },
  };
  function built() {
    call.express();
    Object.defineProperties(ext, {
      request: { value: call.req, writable: true, enumerable: true, configurable: true },
      response: { value: call.res, writable: true, enumerable: true, configurable: true },
    });
    return ext;
  }
  return ext;
}

let app = null;
function expressApp() {
  if (app) return app;
  app = rtRequire('express')();
  app.disable('x-powered-by'); // the server thread adds it to every answer
  app.all('*', (req, res) => {
    const body = req.klBody;
    if (req.klReqBody !== undefined) req.body = req.klReqBody;
    else req.body = body.length > 0 && !req.is('multipart/*') ? body : {};
    if (req.klCall) req.klCall.start();
  });
  // eslint-disable-next-line no-unused-vars
  app.use((err, req, res, next) => (err.status === 400 ? clientError(res, err.message) : fail(err, req, res)));
  return app;
}

// A call from the server: [id, claim slot, method, url, httpVersion, headers, rawHeaders, body,
// remoteAddress, remotePort, localAddress, localPort] (kubeless.js flush()).
function handle([id, slot, method, url, httpVersion, headers, rawHeaders, body,
  remoteAddress, remotePort, localAddress, localPort]) {
  // Claim the call first: the server takes back calls this thread was too busy to start.
  Atomics.add(claims, SEEN, 1);
  if (Atomics.compareExchange(claims, slot, id, -id) !== id) return;
  const dot = httpVersion.indexOf('.');
  const m = {
    id, method, url, httpVersion, headers, rawHeaders, body, remoteAddress, remotePort, localAddress, localPort,
    httpVersionMajor: Number(httpVersion.slice(0, dot)), httpVersionMinor: Number(httpVersion.slice(dot + 1)),
  };
  const call = new Call(m);
  if (m.url.includes('%')) call.express(true); // decoding the path can fail only where it has a %
  else call.start();
}

// The calls of a batch start one per turn of the event loop (setImmediate): a handler's answer is sent from a microtask
// (out()), and microtasks run between turns, not between the calls of one loop. Started in one loop, a
// call that blocks the thread held back the answers of the calls before it until its own timeout.
const starting = [];
function startNext() {
  handle(starting.shift());
  if (starting.length) setImmediate(startNext);
}

if (func) {
  parentPort.on('message', (m) => {
    if (Array.isArray(m)) { // a batch of calls: the first starts now, unless calls of an earlier one wait
      const idle = !starting.length;
      for (const call of m) starting.push(call);
      if (idle) startNext();
    } else if (m.t === 'ping') out({ t: 'pong' });
  });
  out({ t: 'loaded', tid: osThreadId() });
}
