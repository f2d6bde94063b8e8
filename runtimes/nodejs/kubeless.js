'use strict';
// kubeless-local Node.js runtime server: the contract of Kubeless' stable/nodejs/kubeless.js
// (Express objects, CORS, morgan "combined" log, prom-client, REQ_MB_LIMIT) with timeouts that
// really stop the function.
//
// Design: this thread owns the HTTP socket (plain `http`: body limit, /healthz, /metrics, CORS,
// access log, timeouts); the function's Express request/response live in the worker thread
// (worker.js) that holds the module, so a call that overruns
// FUNC_TIMEOUT is answered 408 here and, if the worker's event loop is blocked, the worker is
// terminated (V8 interrupts even `while (true) {}`) and replaced. All calls share one active
// worker (module state persists between calls, as in one Kubeless pod); if that worker stays
// blocked, new calls move to a fresh one so other callers are not stuck behind it.
const path = require('path');
const { createRequire } = require('module');
const { Worker } = require('worker_threads');

const runtimeLib = process.env.KUBELESS_RUNTIME_LIB || '';
const rtRequire = runtimeLib ? createRequire(path.join(runtimeLib, 'package.json')) : require;
const http = require('http');
const client = rtRequire('prom-client');

const installDir = process.env.KUBELESS_INSTALL_VOLUME || '/kubeless';
const modName = process.env.MOD_NAME;
const funcHandler = process.env.FUNC_HANDLER;
const timeout = Number(process.env.FUNC_TIMEOUT || '180');
const funcPort = Number(process.env.FUNC_PORT || '8080');
const bind = process.env.KUBELESS_LOCAL_BIND || '0.0.0.0';
const control = process.env.KUBELESS_LOCAL_CONTROL === '1';
// Kubeless: body-parser limit `${REQ_MB_LIMIT}mb` (MiB), default 1.
const bodyLimit = Math.floor(Number(process.env.REQ_MB_LIMIT || '1') * 1024 * 1024);
const timeoutMs = Math.max(1, Math.round(timeout * 1000));
const PING_GRACE_MS = 250; // a worker that cannot answer a ping this fast is blocked
const BLOCKED_MS = 1000; // a busy active worker is set aside after this long
const MAX_WORKERS = 4; // active + workers set aside, bounds memory

if (!modName || !funcHandler) {
  console.error('MOD_NAME and FUNC_HANDLER must be set');
  process.exit(2);
}
const modPath = path.resolve(installDir, `${modName}.js`);

function controlLine(obj) {
  if (control) process.stdout.write(`@kubeless-local ${JSON.stringify(obj)}\n`);
}

// Metrics: same names and labels as Kubeless (method label = `<MOD_NAME>-<METHOD>`).
const timeHistogram = new client.Histogram({
  name: 'function_duration_seconds', help: 'Duration of user function in seconds', labelNames: ['method'],
});
const callsCounter = new client.Counter({
  name: 'function_calls_total', help: 'Number of calls to user function', labelNames: ['method'],
});
const errorsCounter = new client.Counter({
  name: 'function_failures_total', help: 'Number of exceptions in user function', labelNames: ['method'],
});

// ---- worker pool ------------------------------------------------------------------------------
let generation = 0;
let active = null; // the worker that receives new calls
let loading = null; // a worker loading code (start, reload or replacement)
let suspect = null; // the active worker after a timeout, until it answers a ping
const workers = new Set(); // every live worker
const pending = new Map(); // call id -> call
const queue = []; // calls waiting for a loaded worker
let nextId = 1;

function workerEnv() {
  // User requires resolve from NODE_PATH ({deps}/node_modules); like Kubeless, the runtime's own
  // libraries (express, prom-client, ...) are resolvable as a last resort.
  const extra = runtimeLib ? path.join(runtimeLib, 'node_modules') : path.join(__dirname, 'node_modules');
  const nodePath = [process.env.NODE_PATH, extra].filter(Boolean).join(path.delimiter);
  return { ...process.env, NODE_PATH: nodePath };
}

function spawn(gen, onLoaded, onFailed) {
  // cwd = the install folder as Kubeless' /kubeless. Entered again each time: the engine swaps the
  // folder behind a link on reload and deletes old ones (a worker cannot start in a deleted cwd).
  try { process.chdir(installDir); } catch (err) { process.chdir('/'); }
  const w = new Worker(path.join(__dirname, 'worker.js'), {
    env: workerEnv(),
    workerData: {
      runtimeLib, modPath, modName, funcHandler, timeout,
      runtime: process.env.FUNC_RUNTIME || '',
      memoryLimit: process.env.FUNC_MEMORY_LIMIT || '0',
    },
  });
  const wk = { w, gen, calls: new Set(), loaded: false, dead: false, pingSent: 0, pingTimer: null, setAside: false };
  workers.add(wk);
  w.on('message', (m) => {
    switch (m.t) {
      case 'res': return onResult(wk, m);
      case 'failed':
        process.stderr.write(m.log);
        return errorsCounter.inc({ method: `${modName}-${m.method}` });
      case 'pong':
        wk.pingSent = 0;
        clearTimeout(wk.pingTimer);
        if (wk === suspect) { // only waiting on timers / I/O: keep using it
          suspect = null;
          if (!active && !loading) return setActive(wk);
        }
        return retireIfIdle(wk);
      case 'loaded': wk.loaded = true; return onLoaded(wk);
      case 'load-failed': wk.loadError = m.error; return undefined;
      default: return undefined;
    }
  });
  w.on('error', (err) => {
    // An uncaught exception in the function's own callbacks kills its worker (Kubeless: the pod).
    console.error(`Function worker crashed: ${err && err.stack ? err.stack : err}`);
    wk.crashError = err;
  });
  w.on('exit', () => {
    const stopped = wk.dead; // terminated on purpose (superseded, retired, blocked)
    kill(wk, 500, 'Internal Server Error', true);
    if (!wk.loaded && !stopped) onFailed(wk, wk.loadError || String(wk.crashError || 'worker exited while loading'));
  });
  return wk;
}

// Stop a worker and answer what it still owes.
function kill(wk, status, body, failed) {
  if (wk.dead) return;
  wk.dead = true;
  clearTimeout(wk.pingTimer);
  workers.delete(wk);
  for (const call of wk.calls) {
    if (failed) errorsCounter.inc({ method: call.label });
    finishCall(call, status, body);
  }
  wk.calls.clear();
  wk.w.terminate();
  if (wk === loading) loading = null;
  if (wk === active || wk === suspect) {
    if (wk === suspect) suspect = null;
    active = null;
    replace();
  }
}

function retireIfIdle(wk) {
  if (wk !== active && wk !== suspect && wk.calls.size === 0 && !wk.dead && wk !== loading) kill(wk);
}

// A new worker with the current code after the active one died or was set aside.
function replace() {
  if (loading) return;
  loading = spawn(generation, (wk) => {
    loading = null;
    setActive(wk);
  }, (wk, error) => {
    loading = null;
    console.error(`Function failed to load: ${error}`);
    controlLine({ event: 'load-failed', generation, error });
    // Nothing can serve the queued calls now; answer them instead of leaving them hanging.
    while (queue.length) {
      const call = queue.shift();
      errorsCounter.inc({ method: call.label });
      finishCall(call, 500, 'Internal Server Error');
    }
  });
}

function setActive(wk) {
  const old = active;
  active = wk;
  if (old && old !== wk) retireIfIdle(old);
  while (queue.length && active === wk) dispatch(queue.shift());
}

function dispatch(call) {
  if (!active) {
    queue.push(call);
    if (!loading && !suspect) replace();
    return;
  }
  const wk = active;
  call.worker = wk;
  wk.calls.add(call);
  wk.w.postMessage(call.msg);
  call.msg = null;
  watch(wk);
}

// Ask a worker for a pong; without one in PING_GRACE_MS its event loop is blocked.
function ping(wk, onBlocked) {
  if (wk.dead) return;
  if (!wk.pingSent) {
    wk.pingSent = Date.now();
    wk.w.postMessage({ t: 'ping' });
  }
  clearTimeout(wk.pingTimer);
  wk.pingTimer = setTimeout(() => { if (wk.pingSent && !wk.dead) onBlocked(wk); }, PING_GRACE_MS);
}

// While the active worker has calls, check it now and then; if its loop stays blocked for
// BLOCKED_MS, send new calls to a fresh worker (the busy one finishes or times out on its own).
let watchTimer = null;
function watch() {
  if (watchTimer) return;
  watchTimer = setInterval(() => {
    const wk = active;
    if (!wk || wk.calls.size === 0) { clearInterval(watchTimer); watchTimer = null; return; }
    if (wk.pingSent && Date.now() - wk.pingSent >= BLOCKED_MS) {
      if (!loading && workers.size < MAX_WORKERS) {
        wk.setAside = true;
        active = null;
        replace();
      }
      return;
    }
    if (!wk.pingSent) { wk.pingSent = Date.now(); wk.w.postMessage({ t: 'ping' }); }
  }, BLOCKED_MS / 4);
  watchTimer.unref();
}

function finishCall(call, status, body) {
  if (!pending.delete(call.id)) return;
  clearTimeout(call.timer);
  if (call.worker) call.worker.calls.delete(call);
  const i = queue.indexOf(call);
  if (i >= 0) queue.splice(i, 1);
  call.end();
  if (!call.res.headersSent) reply(call.res, status, body);
}

function onResult(wk, m) {
  const call = pending.get(m.id);
  if (m.log) process.stderr.write(m.log);
  if (!call) return; // answered already (timed out)
  pending.delete(m.id);
  clearTimeout(call.timer);
  wk.calls.delete(call);
  const { res } = call;
  res.statusCode = m.status;
  if (m.reason) res.statusMessage = m.reason;
  const h = m.headers;
  for (let i = 0; i < h.length; i += 2) res.setHeader(h[i], h[i + 1]);
  res.end(m.body);
  call.end();
  if (m.failed) errorsCounter.inc({ method: call.label });
  retireIfIdle(wk);
}

function onTimeout(call) {
  const wk = call.worker;
  finishCall(call, 408, 'Timeout while processing the function');
  if (!wk || wk.dead) return;
  // A worker that is merely waiting (timers, I/O) keeps serving; one stuck in a loop is stopped.
  // Until that is known, new calls wait instead of queueing behind a loop that is about to die.
  if (wk === active) { active = null; suspect = wk; }
  ping(wk, (blocked) => kill(blocked, 503, 'Service Unavailable: the function worker was restarted after another call timed out'));
  if (!wk.dead && wk !== active) retireIfIdle(wk);
}

// ---- HTTP server ------------------------------------------------------------------------------
function reply(res, status, body, type = 'text/html; charset=utf-8') {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

// Access log in morgan's "combined" format (what Kubeless prints), written in batches: morgan
// itself halves the server's throughput.
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
let clfSecond = 0;
let clfDate = '';
function clfNow() {
  const now = Date.now();
  const sec = Math.floor(now / 1000);
  if (sec !== clfSecond) {
    const d = new Date(now);
    const p = (n) => String(n).padStart(2, '0');
    clfSecond = sec;
    clfDate = `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
  }
  return clfDate;
}
let logBuf = '';
function flushLog() {
  const text = logBuf;
  logBuf = '';
  process.stdout.write(text);
}
function remoteUser(req) {
  const m = /^\s*basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(req.headers.authorization || '');
  if (!m) return '-';
  const user = Buffer.from(m[1], 'base64').toString().split(':')[0];
  return user || '-';
}
function accessLog(req, res, addr) {
  const h = req.headers;
  const len = res.getHeader('content-length');
  const line = `${addr} - ${remoteUser(req)} [${clfNow()}] "${req.method} ${req.url} HTTP/${req.httpVersion}" `
    + `${res.headersSent ? res.statusCode : '-'} ${len === undefined ? '-' : len} `
    + `"${h.referer || h.referrer || '-'}" "${h['user-agent'] || '-'}"\n`;
  if (!logBuf) setImmediate(flushLog);
  logBuf += line;
}

function readBody(req, res, done) {
  const h = req.headers;
  // type-is hasBody(): a body exists when either header is present (even Content-Length: 0).
  if (h['transfer-encoding'] === undefined && h['content-length'] === undefined) { done(null); return; }
  const tooLarge = () => reply(res, 413, 'request entity too large');
  if (Number(h['content-length']) > bodyLimit) { tooLarge(); req.resume(); return; }
  const chunks = [];
  let size = 0;
  let failed = false;
  req.on('data', (c) => {
    if (failed) return;
    size += c.length;
    if (size > bodyLimit) { failed = true; tooLarge(); return; }
    chunks.push(c);
  });
  req.on('end', () => { if (!failed) done(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)); });
}

function isPath(url, p) {
  // Express routes are case-insensitive and allow a trailing slash.
  const q = url.indexOf('?');
  const pathname = (q < 0 ? url : url.slice(0, q)).toLowerCase();
  return pathname === p || pathname === `${p}/`;
}

function onRequest(req, res) {
  const sock = req.socket;
  const addr = sock.remoteAddress;
  res.on('close', () => accessLog(req, res, addr));
  res.setHeader('X-Powered-By', 'Express');
  const { method } = req;
  if ((method === 'GET' || method === 'HEAD') && isPath(req.url, '/healthz')) { reply(res, 200, 'OK'); return; }
  if ((method === 'GET' || method === 'HEAD') && isPath(req.url, '/metrics')) {
    client.register.metrics().then((text) => reply(res, 200, text, client.register.contentType),
      (err) => reply(res, 500, String(err)));
    return;
  }
  res.setHeader('Access-Control-Allow-Origin', '*');
  if (method === 'OPTIONS') {
    // CORS preflight: allow whatever method and headers were asked for (as Kubeless).
    const m = req.headers['access-control-request-method'];
    const hs = req.headers['access-control-request-headers'];
    if (m !== undefined) res.setHeader('Access-Control-Allow-Methods', m);
    if (hs !== undefined) res.setHeader('Access-Control-Allow-Headers', hs);
    res.end();
    return;
  }
  readBody(req, res, (body) => {
    const label = `${modName}-${method}`;
    callsCounter.inc({ method: label });
    const id = nextId++;
    const call = {
      id, res, label, worker: null,
      end: timeHistogram.startTimer({ method: label }),
      msg: {
        t: 'call', id, method, url: req.url,
        httpVersion: req.httpVersion, httpVersionMajor: req.httpVersionMajor, httpVersionMinor: req.httpVersionMinor,
        headers: req.headers, rawHeaders: req.rawHeaders, body: body && body.length ? body : null,
        remoteAddress: addr, remotePort: sock.remotePort, localAddress: sock.localAddress, localPort: sock.localPort,
      },
    };
    call.timer = setTimeout(onTimeout, timeoutMs, call);
    pending.set(id, call);
    // A client that goes away does not cancel the call (as Kubeless); its answer is dropped.
    dispatch(call);
  });
}

// ---- start, reload ----------------------------------------------------------------------------
let server = null;

function load(gen) {
  if (loading) kill(loading);
  loading = spawn(gen, (wk) => {
    loading = null;
    setActive(wk);
    if (server) { controlLine({ event: 'ready', generation: gen }); return; }
    server = http.createServer(onRequest);
    server.listen(funcPort, bind, () => controlLine({ event: 'ready', generation: gen }));
    server.on('error', (err) => { console.error(`Cannot listen on ${bind}:${funcPort}: ${err.message}`); process.exit(1); });
  }, (wk, error) => {
    console.error(`Function failed to load: ${error}`);
    controlLine({ event: 'load-failed', generation: gen, error });
    if (!server) { setImmediate(() => process.exit(1)); return; }
    if (!active && queue.length) replace();
  });
}

// SIGHUP: load the module again in a fresh worker (fresh require cache); swap only if it loads,
// otherwise the last good code keeps serving.
process.on('SIGHUP', () => {
  generation += 1;
  load(generation);
});

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

load(0);
