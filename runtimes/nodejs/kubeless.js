'use strict';
// kubeless-local Node.js runtime server: the contract of Kubeless' stable/nodejs/kubeless.js
// (Express objects, CORS, morgan "combined" log, prom-client, REQ_MB_LIMIT) with timeouts that
// really stop the function.
//
// Design: this thread owns the HTTP socket (plain `http`: body limit, /healthz, /metrics, CORS,
// access log, timeouts); the function's Express request/response live in the worker thread
// (worker.js) that holds the module, so a call that overruns
// FUNC_TIMEOUT is answered 408 here and, if the worker's event loop is blocked, the worker is
// terminated (V8 interrupts even `while (true) {}`) and replaced. Calls share the most recently
// used worker (module state persists between calls, as in one Kubeless pod); while that worker is
// stuck in synchronous code, calls move to a spare so other callers are not stuck behind it.
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');
const v8 = require('v8');
const vm = require('vm');
const { Worker } = require('worker_threads');

// V8 collects only as it allocates: an idle server would keep its last big bodies. After a call with
// a body of BIG_BODY or more, this thread and the worker collect (see releaseSoon), with V8's gc, exposed
// (--expose-gc) by the first such call rather than at the start: with the flag set, every worker thread
// takes ~30 ms more to start (Node 20: an empty one 27 → 57 ms), the first one included, which the
// server's first answer waits for. The flag also gives each worker started after it a `gc`, which
// worker.js takes away from the function's global scope.
const BIG_BODY = 8 * 1024 * 1024;
const COLLECT_EVERY = 4 * 1024 * 1024; // while a big body arrives: see readBody
let gc = null;
function collectGarbage(options) {
  if (!gc) {
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc');
  }
  gc(options);
}
let releaseTimer = null;
function releaseSoon() { // 100 ms after the last big call: its buffers are garbage by then
  clearTimeout(releaseTimer);
  releaseTimer = setTimeout(collectGarbage, 100);
}

const runtimeLib = process.env.KUBELESS_RUNTIME_LIB || '';
const rtRequire = runtimeLib ? createRequire(path.join(runtimeLib, 'package.json')) : require;
const http = require('http');

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
// dev --debug: the V8 inspector of this process on 127.0.0.1; the worker threads that run the function are
// its targets (the NodeWorker domain, which editors follow), and they load the module by the stable
// install path (--preserve-symlinks), so an editor's path mapping holds across saves. The engine sets a
// FUNC_TIMEOUT that no call paused at a breakpoint reaches.
const debugPort = Number(process.env.KUBELESS_LOCAL_DEBUG_PORT || '0');
const workerArgv = debugPort ? [...process.execArgv, '--preserve-symlinks'] : undefined;
const MAX_WORKERS = 4; // the serving worker, a spare and workers set aside: bounds memory

if (!modName || !funcHandler) {
  console.error('MOD_NAME and FUNC_HANDLER must be set');
  process.exit(2);
}
const modPath = path.resolve(installDir, `${modName}.js`);

function controlLine(obj) {
  if (!control) return;
  flushLog(); // the lines of calls answered before it come before it
  process.stdout.write(`@kubeless-local ${JSON.stringify(obj)}\n`);
}

// Metrics: same names and labels as Kubeless (method label = `<MOD_NAME>-<METHOD>`). The counters
// are kept in plain numbers per label and handed to prom-client when /metrics is read (its label
// checks and hashing per call were a fifth of this thread's time per call). prom-client itself is
// loaded by the first /metrics (a tenth of the server's start was loading it); the durations measured
// until then wait in their tally (at most MAX_WAITING: then it is loaded).
const MAX_WAITING = 100000;
const tallies = new Map(); // method label -> { labels, calls, failures, durations waiting for prom-client }
let prom = null; // { register, histogram } once loaded
let waiting = 0;
function tally(label) {
  let t = tallies.get(label);
  if (!t) {
    t = { labels: { method: label }, calls: 0, failures: 0, durations: [] };
    tallies.set(label, t);
  }
  return t;
}
function promMetrics() {
  if (prom) return prom;
  const client = rtRequire('prom-client');
  const histogram = new client.Histogram({
    name: 'function_duration_seconds', help: 'Duration of user function in seconds', labelNames: ['method'],
  });
  new client.Counter({ // eslint-disable-line no-new
    name: 'function_calls_total', help: 'Number of calls to user function', labelNames: ['method'],
    collect() {
      for (const t of tallies.values()) if (t.calls) { this.inc(t.labels, t.calls); t.calls = 0; }
    },
  });
  new client.Counter({ // eslint-disable-line no-new
    name: 'function_failures_total', help: 'Number of exceptions in user function', labelNames: ['method'],
    collect() {
      for (const t of tallies.values()) if (t.failures) { this.inc(t.labels, t.failures); t.failures = 0; }
    },
  });
  prom = { register: client.register, histogram };
  for (const t of tallies.values()) {
    for (const seconds of t.durations) histogram.observe(t.labels, seconds);
    t.durations = [];
  }
  waiting = 0;
  return prom;
}

// A call is answered (a timeout or a crash is a failure too): count it.
function count(call, failed) {
  const t = call.tally;
  t.calls += 1;
  if (failed) t.failures += 1;
  const seconds = (performance.now() - call.started) / 1000;
  if (prom) prom.histogram.observe(t.labels, seconds);
  else {
    t.durations.push(seconds);
    if (++waiting >= MAX_WAITING) promMetrics();
  }
}

// ---- worker pool ------------------------------------------------------------------------------
// Calls go to the most recently used worker that keeps up (module state persists between calls,
// as in one Kubeless pod; async calls share its event loop). A worker that has not picked up a
// call within STALL_MS is stuck in synchronous code: its waiting calls move to another worker and
// new calls avoid it until it answers again. Who runs a call is settled through its claim word, a
// slot of the worker's shared array (+id posted, -id started by the worker, 0 taken back by this
// thread; a slot serves the next call once its call is answered), so a call never runs twice. The
// word after the slots (SEEN) counts the calls the worker has taken from its messages: a batch it
// has not taken whole after STALL_MS shows it stuck.
// One idle spare worker is kept loaded, so moving calls never waits for a load.
const SLOTS = 16384; // claim words per worker: the calls it can hold at once
const SEEN = SLOTS;
const STALL_MS = 50;
const CHECK_MS = 20;
const SPARE_RETRY_MS = 1000; // after a spare failed to load, wait before the next attempt
let attempts = 0; // SIGHUP count: the generation number in control lines
let serving = 0; // the generation whose code serves
let loading = null; // a worker loading the code of a reload
const workers = new Set(); // every live worker
const pending = new Map(); // call id -> call
const queue = []; // calls waiting for a worker that keeps up
let nextId = 1;
let useCounter = 0;
let spareFailedAt = 0;

function workerEnv() {
  // User requires resolve from NODE_PATH ({deps}/node_modules); like Kubeless, the runtime's own
  // libraries (express, prom-client, ...) are resolvable as a last resort.
  const extra = runtimeLib ? path.join(runtimeLib, 'node_modules') : path.join(__dirname, 'node_modules');
  const nodePath = [process.env.NODE_PATH, extra].filter(Boolean).join(path.delimiter);
  return { ...process.env, NODE_PATH: nodePath };
}

// cwd = the install folder, as Kubeless' /kubeless. The engine swaps the folder behind this path on
// reload and deletes old ones, and a cwd is resolved when entered: enter it again before each load.
// Threads share the process's cwd, so it follows the code that serves.
function enterInstallDir(dir = installDir) {
  try { process.chdir(dir); } catch (err) { process.chdir('/'); }
}

// The worker held.js started while it waited (globalThis.kubelessLocalWorker: {worker, wake}), given `data` and
// its env; once, for the first load (a worker's start is most of the server's). None under a debugger (its own
// execArgv).
function startedWorker(data) {
  const started = globalThis.kubelessLocalWorker;
  if (!started || workerArgv) return null;
  globalThis.kubelessLocalWorker = null;
  started.worker.ref(); // held.js left it out of what keeps the process alive, as any other server's
  started.worker.postMessage({ data, env: workerEnv() });
  Atomics.store(started.wake, 0, 1);
  Atomics.notify(started.wake, 0);
  return started.worker;
}

function spawn(gen, onLoaded, onFailed) {
  enterInstallDir();
  const claims = new Int32Array(new SharedArrayBuffer(4 * (SLOTS + 1)));
  const data = {
    runtimeLib, modPath, modName, funcHandler, timeout, claims,
    runtime: process.env.FUNC_RUNTIME || '',
    memoryLimit: process.env.FUNC_MEMORY_LIMIT || '0',
  };
  const w = startedWorker(data)
    || new Worker(path.join(__dirname, 'worker.js'), { env: workerEnv(), execArgv: workerArgv, workerData: data });
  const wk = {
    w, gen, claims, free: Array.from({ length: SLOTS }, (_, i) => SLOTS - 1 - i),
    dir: process.cwd(), calls: new Set(), outbox: [], sent: 0, sends: [], loaded: false, dead: false,
    stalled: false, lastUsed: 0, pingSent: 0, pingTimer: null, tid: 0, // tid: its thread in the kernel (killWhatItStarted)
  };
  workers.add(wk);
  // The worker sends what it has in batches (worker.js out()): results are arrays, the rest objects.
  w.on('message', (batch) => {
    wk.stalled = false; // it runs its event loop again
    for (const m of batch) {
      if (Array.isArray(m)) onResult(wk, m);
      else onControl(wk, m, onLoaded);
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

function onControl(wk, m, onLoaded) {
  switch (m.t) {
    case 'out': // the function's output (worker.js relayOutput): after the access lines of the answers before it
      flushLog();
      (m.fd === 2 ? process.stderr : process.stdout).write(m.data);
      return undefined;
    case 'failed':
      process.stderr.write(m.log);
      tally(`${modName}-${m.method}`).failures += 1;
      return undefined;
    case 'pong':
      wk.pingSent = 0;
      clearTimeout(wk.pingTimer);
      drain();
      return trim();
    case 'loaded': wk.loaded = true; wk.tid = m.tid; return onLoaded(wk);
    case 'load-failed': wk.loadError = m.error; return undefined;
    default: return undefined;
  }
}

// Take a posted call back from a worker that has not started it; false once the worker has.
function takeBack(call) {
  const wk = call.worker;
  if (!wk || Atomics.compareExchange(wk.claims, call.slot, call.id, 0) !== call.id) return false;
  release(call);
  return true;
}

// The call leaves its worker (answered, timed out, taken back): its claim slot serves another call.
function release(call) {
  const wk = call.worker;
  if (!wk) return;
  Atomics.compareExchange(wk.claims, call.slot, call.id, 0); // never started: it must not start now
  wk.calls.delete(call);
  wk.free.push(call.slot);
  call.worker = null;
}

// Stop a worker: calls it has not started move on; the ones it runs are answered `status`.
function kill(wk, status, body, failed) {
  if (wk.dead) return;
  wk.dead = true;
  clearTimeout(wk.pingTimer);
  workers.delete(wk);
  const moved = [];
  for (const call of wk.calls) {
    if (takeBack(call)) { moved.push(call); continue; }
    finishCall(call, status, body, failed);
  }
  wk.calls.clear();
  wk.w.terminate();
  if (wk === loading) loading = null;
  for (const call of moved) dispatch(call);
  ensureSpare();
}

function usable(wk) {
  return wk.loaded && !wk.dead && !wk.stalled && wk.gen === serving && wk.pingSent === 0 && wk.free.length > 0;
}

// The most recently used worker that keeps up.
function pick() {
  let best = null;
  for (const wk of workers) if (usable(wk) && (!best || wk.lastUsed > best.lastUsed)) best = wk;
  return best;
}

// A spare's boot (a worker thread: ~30 ms of a core) begun beside a call slows it down, and the first call
// of a server (`run`'s first answer) most: calls look for a spare once per SPARE_AFTER_MS, not each.
const SPARE_AFTER_MS = 20;
let spareTimer = null;
function spareLater() {
  spareTimer = null;
  ensureSpare();
}

// Keep one loaded worker of the serving code idle, within MAX_WORKERS.
function ensureSpare() {
  if (!server || loading) return; // the first load or a reload is under way
  for (const wk of workers) {
    if (wk.gen === serving && (!wk.loaded || (usable(wk) && wk.calls.size === 0))) return;
  }
  if (workers.size >= MAX_WORKERS || Date.now() - spareFailedAt < SPARE_RETRY_MS) return;
  spawn(serving, (wk) => {
    if (wk.gen !== serving) { kill(wk); return; }
    drain();
    trim();
  }, (wk, error) => {
    spareFailedAt = Date.now();
    console.error(`Function failed to load: ${error}`);
    if (!pick()) { // nothing can serve the queued calls now; answer them instead of leaving them hanging
      while (queue.length) finishCall(queue[0], 500, 'Internal Server Error', true);
    }
  });
}

// Retire what is no longer needed: old generations once idle, idle workers beyond one spare.
function trim() {
  const idle = [];
  let busy = 0;
  for (const wk of workers) {
    if (!wk.loaded || wk.dead || wk === loading) continue;
    if (wk.gen !== serving) { if (wk.calls.size === 0) kill(wk); continue; }
    if (usable(wk) && wk.calls.size === 0) idle.push(wk); else busy += 1;
  }
  idle.sort((a, b) => b.lastUsed - a.lastUsed);
  for (const wk of idle.slice(Math.max(1, 2 - busy))) kill(wk);
}

function drain() {
  while (queue.length && pick()) dispatch(queue.shift());
}

function dispatch(call) {
  const wk = pick();
  if (!wk) {
    queue.push(call);
    ensureSpare();
    return;
  }
  call.worker = wk;
  call.slot = wk.free.pop();
  Atomics.store(wk.claims, call.slot, call.id);
  wk.calls.add(call);
  wk.lastUsed = ++useCounter;
  if (!wk.outbox.length) setImmediate(flush, wk);
  wk.outbox.push(call);
  if (!spareTimer) spareTimer = setTimeout(spareLater, SPARE_AFTER_MS);
}

// The calls dispatched to a worker in one turn of the event loop go in one message: a message costs
// more than the few fields of a call. Each is [id, claim slot, ...call.msg] (see worker.js handle()).
function flush(wk) {
  const calls = wk.outbox;
  wk.outbox = [];
  if (wk.dead) return;
  const batch = [];
  for (const call of calls) {
    if (call.worker === wk && Atomics.load(wk.claims, call.slot) === call.id) batch.push([call.id, call.slot, ...call.msg]);
  }
  if (!batch.length) return;
  wk.sent = (wk.sent + batch.length) | 0; // int32, as SEEN
  unseen(wk).push([wk.sent, Date.now()]);
  wk.w.postMessage(batch);
  watch();
}

// The batches sent to a worker that it has not taken whole: [SEEN once taken, when sent].
function unseen(wk) {
  const seen = Atomics.load(wk.claims, SEEN);
  const { sends } = wk;
  while (sends.length && ((seen - sends[0][0]) | 0) >= 0) sends.shift();
  return sends;
}

// While calls wait in a worker's message queue, check that it picks them up.
let checkTimer = null;
function watch() {
  if (!checkTimer) checkTimer = setInterval(check, CHECK_MS).unref();
}

function check() {
  const now = Date.now();
  let waiting = false;
  for (const wk of [...workers]) {
    const sends = unseen(wk);
    if (!sends.length) continue;
    waiting = true;
    if (wk.stalled || now - sends[0][1] < STALL_MS) continue;
    wk.stalled = true;
    wk.w.postMessage({ t: 'ping' }); // its pong (or any answer) shows it keeps up again
    const moved = [...wk.calls].filter(takeBack); // those it has not started
    for (const call of moved) dispatch(call);
  }
  if (!waiting) { clearInterval(checkTimer); checkTimer = null; }
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

// Answer a call that did not get a result from its function, and count it.
function finishCall(call, status, body, failed) {
  if (!pending.delete(call.id)) return;
  clearTimeout(call.timer);
  release(call);
  const i = queue.indexOf(call);
  if (i >= 0) queue.splice(i, 1);
  call.msg = null;
  count(call, failed);
  if (!call.res.headersSent) reply(call.res, status, body);
  else call.res.destroy(); // a streamed answer cut short: the caller sees it end unfinished, not complete
}

// A function's answer: [id, status, reason, headers (name, value, ...), body, failed, clientError, log, more]; with
// `more`, a piece of it written before the function ended it (worker.js send()): the caller gets it now.
function onResult(wk, [id, status, reason, headers, body, failed, clientError, log, more]) {
  const call = pending.get(id);
  if (log) process.stderr.write(log);
  if (!call) return; // answered already (timed out)
  const { res } = call;
  if (!res.headersSent) {
    res.statusCode = status;
    if (reason) res.statusMessage = reason;
    for (let i = 0; i < headers.length; i += 2) res.setHeader(headers[i], headers[i + 1]);
  }
  if (more) {
    if (body.length) res.write(body);
    else res.flushHeaders();
    return;
  }
  pending.delete(id);
  clearTimeout(call.timer);
  release(call);
  call.msg = null;
  res.end(body);
  if (!clientError) count(call, failed); // the caller's mistake (bad JSON, bad path) is no call
  if (call.size >= BIG_BODY) releaseSoon();
  drain();
  trim();
}

function onTimeout(call) {
  const wk = call.worker;
  const started = wk && !takeBack(call);
  finishCall(call, 408, 'Timeout while processing the function', true);
  if (!started || wk.dead) return;
  // A worker that is merely waiting (timers, I/O) keeps serving; one stuck in a loop is stopped, with the
  // processes it started (calls it has not started move to another worker).
  ping(wk, (blocked) => {
    killWhatItStarted(blocked);
    kill(blocked, 503, 'Service Unavailable: the function worker was restarted after another call timed out', true);
  });
}

// The processes worker thread `tid` started and theirs (Linux /proc, where a thread's children are listed apart
// from the other threads'), read while they are its: a thread that ends hands its children to another thread.
function startedBy(tid) {
  const children = (file) => {
    try {
      return fs.readFileSync(file, 'utf8').split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  const found = children(`/proc/self/task/${tid}/children`);
  const parents = [...found];
  while (parents.length) {
    const pid = parents.pop();
    let threads = [];
    try { threads = fs.readdirSync(`/proc/${pid}/task`); } catch { continue; }
    for (const thread of threads) {
      const theirs = children(`/proc/${pid}/task/${thread}/children`);
      found.push(...theirs);
      parents.push(...theirs);
    }
  }
  return found;
}

// SIGKILL what a stuck worker started (a subprocess, one it waits for with execSync, a shell in a session of its
// own): each is stopped first so that none starts another meanwhile; read again until no new one shows (bounded).
// Left alone they would run on, and a worker waiting for one could not be terminated until it ended.
function killWhatItStarted(wk) {
  if (!wk.tid) return;
  const stopped = [];
  for (let pass = 0; pass < 5; pass += 1) {
    const fresh = startedBy(wk.tid).filter((pid) => !stopped.includes(pid));
    if (!fresh.length) break;
    for (const pid of fresh) signal(pid, 'SIGSTOP');
    stopped.push(...fresh);
  }
  for (const pid of stopped) signal(pid, 'SIGKILL');
}

function signal(pid, name) {
  try { process.kill(pid, name); } catch { /* gone meanwhile, or another user's */ }
}

// ---- HTTP server ------------------------------------------------------------------------------
function reply(res, status, body, type = 'text/html; charset=utf-8') {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

// Access log in morgan's "combined" format (what Kubeless prints), written in batches: morgan
// itself halves the server's throughput. A batch is written LOG_FLUSH_MS after its first line (or
// once LOG_BATCH long): a write per turn of the event loop woke `dev`'s log reader that often. A
// control line and the exit write what is pending first.
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
const LOG_FLUSH_MS = 10;
const LOG_BATCH = 32 * 1024;
let logBuf = '';
let logTimer = null;
function flushLog() {
  clearTimeout(logTimer);
  logTimer = null;
  if (!logBuf) return;
  const text = logBuf;
  logBuf = '';
  process.stdout.write(text);
}
process.on('exit', flushLog);
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
  if (!logBuf) logTimer = setTimeout(flushLog, LOG_FLUSH_MS);
  logBuf += line;
  if (logBuf.length >= LOG_BATCH) flushLog();
}

function readBody(req, res, done) {
  const h = req.headers;
  // type-is hasBody(): a body exists when either header is present (even Content-Length: 0).
  if (h['transfer-encoding'] === undefined && h['content-length'] === undefined) { done(null); return; }
  const tooLarge = () => reply(res, 413, 'request entity too large');
  const declared = Number(h['content-length']);
  if (declared > bodyLimit) { tooLarge(); req.resume(); return; }
  // Each chunk is copied out as it arrives (not kept until the end), into shared memory.
  let body = new SharedBody(h['transfer-encoding'] === undefined ? declared : 0);
  let failed = false;
  let sinceCollect = 0;
  req.on('data', (c) => {
    if (failed) return;
    if (body.size + c.length > bodyLimit) { failed = true; body = null; tooLarge(); return; }
    body.append(c);
    sinceCollect += c.length;
    if (sinceCollect >= COLLECT_EVERY) { // a quick young-generation collection frees the copied chunks
      sinceCollect = 0;
      collectGarbage({ type: 'minor' });
    }
  });
  req.on('end', () => { if (!failed) done(body.size ? body.bytes() : null); });
}

// A body in shared memory: posting it to a worker (again, when a call moves to another worker)
// copies nothing. A copied 50 MB body took the worker longer than STALL_MS to receive, so the call
// kept moving from worker to worker and was never answered.
class SharedBody {
  constructor(expected) {
    this.buf = new Uint8Array(new SharedArrayBuffer(expected > 0 ? expected : 0));
    this.size = 0;
  }

  append(chunk) {
    if (this.size + chunk.length > this.buf.length) { // chunked, or longer than announced: grow
      const bigger = new Uint8Array(new SharedArrayBuffer(Math.max(2 * this.buf.length, this.size + chunk.length)));
      bigger.set(this.buf.subarray(0, this.size));
      this.buf = bigger;
    }
    this.buf.set(chunk, this.size);
    this.size += chunk.length;
  }

  bytes() {
    return this.size === this.buf.length ? this.buf : this.buf.subarray(0, this.size);
  }
}

// Header values arrive as latin1 strings; non-ASCII ones must be UTF-8 bytes (as in every runtime).
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
function utf8Headers(raw) {
  for (let i = 1; i < raw.length; i += 2) {
    // eslint-disable-next-line no-control-regex
    if (!/[^\x00-\x7f]/.test(raw[i])) continue;
    try { strictUtf8.decode(Buffer.from(raw[i], 'latin1')); } catch (err) { return false; }
  }
  return true;
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
    const { register } = promMetrics();
    register.metrics().then((text) => reply(res, 200, text, register.contentType),
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
  if (!utf8Headers(req.rawHeaders)) { reply(res, 400, 'Bad Request: header values must be UTF-8'); return; }
  readBody(req, res, (body) => {
    const id = nextId;
    nextId = nextId === 0x3fffffff ? 1 : nextId + 1; // an int32 claim word holds -id
    const call = {
      id, res, worker: null, slot: -1, size: body ? body.length : 0,
      tally: tally(`${modName}-${method}`), started: performance.now(),
      // the request, as worker.js handle() reads it after [id, claim slot]
      msg: [method, req.url, req.httpVersion, req.headers, req.rawHeaders, body,
        addr, sock.remotePort, sock.localAddress, sock.localPort],
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
    serving = gen;
    drain();
    trim();
    if (server) { ensureSpare(); controlLine({ event: 'ready', generation: gen }); return; }
    server = http.createServer(onRequest);
    // A client that half-closes after sending (`nc -N`) still gets its answer.
    server.httpAllowHalfOpen = true;
    server.listen(funcPort, bind, () => { ensureSpare(); controlLine({ event: 'ready', generation: gen }); });
    // not a load failure: the code is fine, the port is not (exit 4 in every runtime; the engine retries)
    server.on('error', (err) => { console.error(`cannot listen on ${bind}:${funcPort}: ${err.message}`); process.exit(4); });
  }, (wk, error) => {
    if (wk === loading) loading = null;
    // under kubeless-local the engine shows the error (once); standalone it goes to stderr
    if (control) controlLine({ event: 'load-failed', generation: gen, error });
    else console.error(`Function failed to load: ${error}`);
    if (!server) { setImmediate(() => process.exit(1)); return; }
    const good = pick();
    if (good) enterInstallDir(good.dir); // back to the folder of the code that still serves
    ensureSpare();
  });
}

// SIGHUP: load the module again in a fresh worker (fresh require cache); swap only if it loads,
// otherwise the last good code keeps serving.
process.on('SIGHUP', () => {
  attempts += 1;
  load(attempts);
});

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

if (debugPort) {
  const inspector = require('inspector');
  const debugHost = process.env.KUBELESS_LOCAL_DEBUG_HOST || '127.0.0.1'; // 0.0.0.0: a bridge-mode container's own
  inspector.open(debugPort, debugHost, false);
  if (!inspector.url()) { // it said why (address in use) on stderr
    console.error(`the debugger cannot listen on ${debugHost}:${debugPort}`);
    process.exit(1);
  }
}
load(0);
