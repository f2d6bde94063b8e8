// The page's state: the session's rows by name and the recent log lines, kept current by the event stream.
// The server sends a row whole whenever it changes, so applying an event is replacing a row.

const MAX_LINES = 5000; // log lines kept in the page
const MAX_INVOCATIONS = 2000; // recorded calls kept in the page (older ones are asked for page by page)
const TRAIL = 6; // recent states shown beside a function's state

export const store = {
  functions: new Map(),
  trails: new Map(), // name → [{state, generation, at}], oldest first
  cron: new Map(),
  topics: new Map(),
  metrics: new Map(),
  graph: new Map(), // `kind/trigger` → the functions it calls
  lines: [],
  invocations: [], // summaries, newest first
  readOnly: false,
  connected: false,
  error: '',
};

const listeners = new Set();
let scheduled = false;

export function onChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function changed() {
  if (scheduled) return;
  scheduled = true;
  queueMicrotask(() => {
    scheduled = false;
    for (const listener of listeners) listener();
  });
}

function setFunction(row) {
  const trail = store.trails.get(row.name) || [];
  const last = trail[trail.length - 1];
  if (!last || last.state !== row.state || last.generation !== row.generation) {
    trail.push({ state: row.state, generation: row.generation, at: Date.now() });
    store.trails.set(row.name, trail.slice(-TRAIL));
  }
  store.functions.set(row.name, row);
}

function addLine(line) {
  store.lines.push(line);
  if (store.lines.length > MAX_LINES) store.lines.splice(0, store.lines.length - MAX_LINES);
}

// A recorded call: from the stream as it ends (newest), or an older page asked for (`older`).
export function addInvocations(rows, older = false) {
  const known = new Set(store.invocations.map((row) => row.id));
  const fresh = rows.filter((row) => !known.has(row.id));
  store.invocations = older ? [...store.invocations, ...fresh] : [...fresh.reverse(), ...store.invocations];
  if (store.invocations.length > MAX_INVOCATIONS) store.invocations.length = MAX_INVOCATIONS;
}

// The engine's own word on a function's state (Reloading, then Ready with the generation that serves), at
// once: a polled row could miss a reload of a few milliseconds. The error and its `file:line` come with the
// row, together.
function setState(event) {
  const row = store.functions.get(event.function);
  if (row) setFunction({ ...row, state: event.state, generation: event.generation });
}

export const apply = {
  function: setFunction,
  'function-state': setState,
  'function-removed': (row) => store.functions.delete(row.name),
  cron: (row) => store.cron.set(row.name, row),
  'cron-removed': (row) => store.cron.delete(row.name),
  topic: (row) => store.topics.set(row.name, row),
  'topic-removed': (row) => store.topics.delete(row.name),
  metrics: (row) => store.metrics.set(row.name, row),
  'metrics-removed': (row) => store.metrics.delete(row.name),
  trigger: (row) => store.graph.set(row.name, row),
  'trigger-removed': (row) => store.graph.delete(row.name),
  log: addLine,
  'invocation-end': (row) => addInvocations([row]),
};

export function loadState(state, lines) {
  store.functions.clear();
  store.cron.clear();
  store.topics.clear();
  store.metrics.clear();
  store.graph.clear();
  state.functions.forEach(setFunction);
  state.cron.forEach(apply.cron);
  state.topics.forEach(apply.topic);
  state.metrics.forEach(apply.metrics);
  state.graph.forEach(apply.trigger);
  store.invocations = [];
  addInvocations(state.invocations, true);
  store.readOnly = state.read_only;
  store.lines = [];
  lines.forEach(addLine);
}

const lineKey = (line) => `${line.time}|${line.function}|${line.text}`;

// Lines read with the state may come again on the stream (they were printed while both were read).
export function seenBefore(lines) {
  const keys = new Set(lines.map(lineKey));
  return (line) => keys.size > 0 && keys.has(lineKey(line));
}
