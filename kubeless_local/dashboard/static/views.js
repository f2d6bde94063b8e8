// The views. Everything a function or a user wrote is rendered as text (preact text nodes), never as HTML.
import { html, useState } from './vendor/htm-preact.js';
import { api } from './api.js';
import { param, setParams } from './route.js';
import { store } from './store.js';

const PROBLEMS = new Set(['CompileError', 'InstallError', 'SetupError', 'Crashed', 'ConfigError']);
const PANEL_LINES = 20;

export const clock = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleTimeString() : '–');
export const sorted = (map) => [...map.values()].sort((a, b) => a.name.localeCompare(b.name));

function State({ state }) {
  return html`<span class=${`state state-${state}`}>${state}</span>`;
}

function Trail({ name }) {
  const trail = store.trails.get(name) || [];
  if (trail.length < 2) return null;
  const text = trail.map((step) => `${step.state} (gen ${step.generation ?? '–'})`).join(' → ');
  return html`<div class="trail" data-testid="trail">${text}</div>`;
}

export function Functions() {
  const rows = sorted(store.functions);
  const problems = rows.filter((row) => PROBLEMS.has(row.state) && row.error);
  return html`
    <h1>Functions</h1>
    ${problems.map((row) => html`<${Problem} row=${row} />`)}
    ${rows.length === 0
      ? html`<p>No functions in this session yet.</p>`
      : html`<table>
          <thead><tr>
            <th scope="col">Name</th><th scope="col">State</th><th scope="col">Runtime</th>
            <th scope="col">Backend</th><th scope="col">Generation</th><th scope="col">Last reload</th>
            <th scope="col">URL</th><th scope="col">Triggers</th>
          </tr></thead>
          <tbody>
            ${rows.map((row) => html`<tr data-function=${row.name}>
              <th scope="row">${row.name}</th>
              <td><${State} state=${row.state} /><${Trail} name=${row.name} /></td>
              <td>${row.runtime}</td>
              <td>${row.backend}</td>
              <td data-testid="generation">${row.generation ?? '–'}</td>
              <td>${clock(row.last_reload)}</td>
              <td><code>${row.url || '–'}</code></td>
              <td>${row.triggers.length ? row.triggers.join(', ') : '–'}</td>
            </tr>`)}
          </tbody>
        </table>`}`;
}

function Problem({ row }) {
  const lines = store.lines.filter((line) => line.function === row.name).slice(-PANEL_LINES);
  return html`<section class="problem" aria-labelledby=${`problem-${row.name}`} data-testid="problem">
    <h2 id=${`problem-${row.name}`}>${row.name}: ${row.state}${row.location ? ` at ${row.location}` : ''}</h2>
    <pre class="error">${row.error}</pre>
    <h3>Last log lines</h3>
    <pre class="log">${lines.map((line) => line.text).join('\n') || '(none)'}</pre>
  </section>`;
}

function compiled(text) {
  if (!text) return { test: () => true };
  try {
    return new RegExp(text, 'i');
  } catch {
    return null;
  }
}

export function Logs() {
  const [paused, setPaused] = useState(null); // the lines shown while paused
  const fn = param('fn');
  const query = param('q');
  const filter = compiled(query);
  const source = paused || store.lines;
  const shown = source
    .filter((line) => (!fn || line.function === fn) && (!filter || filter.test(line.text)))
    .slice(-1000);
  const waiting = paused ? store.lines.length - paused.length : 0;
  return html`
    <h1>Logs</h1>
    <div class="toolbar">
      <label>Function <select value=${fn} onChange=${(e) => setParams({ fn: e.target.value })}>
        <option value="">All (merged)</option>
        ${sorted(store.functions).map((row) => html`<option value=${row.name}>${row.name}</option>`)}
      </select></label>
      <label>Filter (regular expression)
        <input type="search" value=${query} onInput=${(e) => setParams({ q: e.target.value })} />
      </label>
      <button type="button" onClick=${() => setPaused(paused ? null : [...store.lines])}>
        ${paused ? `Resume (${waiting} new)` : 'Pause'}
      </button>
    </div>
    ${filter ? null : html`<p class="warning" role="status">Not a valid regular expression: nothing is filtered out yet.</p>`}
    <pre class="log" data-testid="log" tabindex="0" aria-label="log lines">${shown.map(
      (line) => html`<div class=${`line line-${line.stream}`}><span class="fn">${fn ? '' : `${line.function} | `}</span>${line.text}</div>`
    )}</pre>`;
}

export function useAction() {
  const [result, setResult] = useState(null);
  const run = async (action) => {
    setResult({ busy: true });
    try {
      setResult({ value: await action() });
    } catch (error) {
      setResult({ error: error.message });
    }
  };
  return [result, run];
}

export function Result({ result, label }) {
  if (!result) return null;
  if (result.busy) return html`<p role="status">Working…</p>`;
  if (result.error) return html`<p class="failure" role="alert">${result.error}</p>`;
  return html`<pre class="result" aria-label=${label}>${JSON.stringify(result.value, null, 2)}</pre>`;
}

export function Cron() {
  const [result, run] = useAction();
  const rows = sorted(store.cron);
  return html`
    <h1>Cron</h1>
    ${rows.length === 0
      ? html`<p>No CronJobTriggers in this project.</p>`
      : html`<table>
          <thead><tr><th scope="col">Trigger</th><th scope="col">Function</th><th scope="col">Schedule</th>
            <th scope="col">Next 5 fires (UTC)</th><th scope="col">Last runs</th><th scope="col">Action</th></tr></thead>
          <tbody>${rows.map((row) => html`<tr>
            <th scope="row">${row.name}</th><td>${row.function}</td><td><code>${row.schedule}</code>
              ${row.error ? html`<div class="failure">${row.error}</div>` : null}</td>
            <td><ul class="plain">${row.next_fires.map((time) => html`<li>${time}</li>`)}</ul></td>
            <td><ul class="plain">${[...(row.ok || []), ...(row.failed || [])].map(
              (r) => html`<li>${r.started} ${r.ok ? 'ok' : 'failed'} ${r.status ?? ''}</li>`
            )}</ul></td>
            <td><button type="button" disabled=${store.readOnly}
              onClick=${() => run(() => api('POST', `/api/cron/${encodeURIComponent(row.name)}`, {}))}>
              Fire ${row.name} now</button></td>
          </tr>`)}</tbody>
        </table>`}
    <${Result} result=${result} label="fire result" />`;
}

function Publish() {
  const [result, run] = useAction();
  const [fanout, setFanout] = useState(null);
  const submit = (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const topic = form.get('topic');
    const source = form.get('source');
    run(async () => {
      const answer = await api('POST', `/api/topics/${encodeURIComponent(topic)}/events`, {
        source,
        data: form.get('data'),
        content_type: form.get('content_type'),
        count: Number(form.get('count')),
      });
      follow(topic, source, answer, setFanout);
      return answer;
    });
  };
  return html`<form onSubmit=${submit} aria-labelledby="publish-title">
    <h2 id="publish-title">Publish an event (Kafka or NATS)</h2>
    <label>Source <select name="source"><option value="kafka">kafka</option><option value="nats">nats</option></select></label>
    <label>Topic <input name="topic" required /></label>
    <label>Content type <input name="content_type" value="application/json" /></label>
    <label>Count <input name="count" type="number" min="1" value="1" /></label>
    <label class="wide" for="publish-data">Data</label>
    <textarea id="publish-data" class="wide" name="data" rows="3">{"hello": "world"}</textarea>
    <button type="submit" disabled=${store.readOnly}>Publish</button>
    <${Result} result=${result} label="publish result" />
    ${fanout ? html`<pre class="result" aria-label="fan-out">${JSON.stringify(fanout, null, 2)}</pre>` : null}
  </form>`;
}

// The fan-out: each subscriber's outcome for the events just published, until all are settled (10 s at most).
// Only the embedded topics track it (`tracked`); a real broker's consumer groups show on the Topics view.
async function follow(topic, source, answer, show) {
  if (!answer || !answer.tracked || !answer.ranges || answer.ranges.length === 0) return;
  const { first, last } = answer.ranges[0];
  const path = `/api/topics/${encodeURIComponent(topic)}/events?from=${first}&to=${last}&source=${source}`;
  for (let look = 0; look < 40; look++) {
    const outcome = await api('GET', path).catch(() => null);
    if (outcome) show(outcome);
    const states = outcome ? Object.values(outcome).flatMap((subs) => Object.values(subs)) : [];
    if (outcome && states.every((s) => s === 'delivered' || s === 'dead-lettered')) return;
    await new Promise((wake) => setTimeout(wake, 250));
  }
}

function FireCron() {
  const [result, run] = useAction();
  const submit = (event) => {
    event.preventDefault();
    const name = new FormData(event.target).get('trigger');
    run(() => api('POST', `/api/cron/${encodeURIComponent(name)}`, {}));
  };
  return html`<form onSubmit=${submit} aria-labelledby="fire-title">
    <h2 id="fire-title">Fire a CronJobTrigger now</h2>
    <label>Trigger <select name="trigger">${sorted(store.cron).map((row) => html`<option value=${row.name}>${row.name}</option>`)}</select></label>
    <button type="submit" disabled=${store.readOnly || store.cron.size === 0}>Fire</button>
    <${Result} result=${result} label="fire result" />
  </form>`;
}

function HttpCall() {
  const [result, run] = useAction();
  const submit = (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    run(() =>
      api('POST', `/api/functions/${encodeURIComponent(form.get('function'))}/call`, {
        method: form.get('method'),
        path: form.get('path'),
        data: form.get('data'),
      })
    );
  };
  return html`<form onSubmit=${submit} aria-labelledby="call-title">
    <h2 id="call-title">Call a function over HTTP</h2>
    <label>Function <select name="function">${sorted(store.functions).map((row) => html`<option value=${row.name}>${row.name}</option>`)}</select></label>
    <label>Method <select name="method">${['', 'GET', 'POST', 'PUT', 'PATCH', 'DELETE'].map(
      (m) => html`<option value=${m}>${m || 'as the data says (GET or POST)'}</option>`
    )}</select></label>
    <label>Path <input name="path" value="/" /></label>
    <label class="wide" for="call-data">Data</label>
    <textarea id="call-data" class="wide" name="data" rows="3"></textarea>
    <button type="submit" disabled=${store.readOnly || store.functions.size === 0}>Call</button>
    ${result && result.value
      ? html`<div class="answer"><p>Status <strong>${result.value.status}</strong> in ${result.value.ms} ms</p>
          <pre class="result" aria-label="answer body">${result.value.body}</pre></div>`
      : html`<${Result} result=${result} label="call result" />`}
  </form>`;
}

export function Emit() {
  return html`<h1>Emit</h1>
    ${store.readOnly ? html`<p class="warning">This dashboard is read-only.</p>` : null}
    <${Publish} /><${FireCron} /><${HttpCall} />`;
}

export function Topics() {
  const [result, run] = useAction();
  const replay = (topic, body) =>
    run(() => api('POST', `/api/topics/${encodeURIComponent(topic)}/replay`, body));
  const topics = sorted(store.topics);
  return html`<h1>Topics and dead letters</h1>
    <${Result} result=${result} label="replay result" />
    ${topics.length === 0 ? html`<p>No topics yet.</p>` : null}
    ${topics.map((topic) => html`<section aria-labelledby=${`topic-${topic.name}`}>
      <h2 id=${`topic-${topic.name}`}>${topic.name} <small>(${topic.events} events)</small></h2>
      <table>
        <thead><tr><th scope="col">Subscriber</th><th scope="col">Function</th><th scope="col">Position</th><th scope="col">Lag</th></tr></thead>
        <tbody>${topic.subscribers.map((sub) => html`<tr>
          <td>${sub.trigger || sub.name}</td><td>${sub.function}</td><td>${sub.position}</td><td>${sub.lag}</td></tr>`)}</tbody>
      </table>
      <h3>Dead letters (${topic.dead_letters.length})</h3>
      ${topic.dead_letters.length
        ? html`<button type="button" disabled=${store.readOnly} onClick=${() => replay(topic.name, {})}>Replay all of ${topic.name}</button>
          <table>
            <thead><tr><th scope="col">Id</th><th scope="col">Function</th><th scope="col">Event</th><th scope="col">Attempts</th>
              <th scope="col">Last answer</th><th scope="col">Action</th></tr></thead>
            <tbody>${topic.dead_letters.map((letter) => html`<tr>
              <td>${letter.id}</td><td>${letter.function}</td><td>${letter.seq}</td><td>${letter.attempts}</td>
              <td><code>${letter.status} ${String(letter.body ?? '').slice(0, 200)}</code></td>
              <td>${letter.replay ? 'replaying…' : html`<button type="button" disabled=${store.readOnly}
                onClick=${() => replay(topic.name, { id: letter.id })}>Replay ${letter.id}</button>`}</td>
            </tr>`)}</tbody>
          </table>`
        : html`<p>None.</p>`}
    </section>`)}`;
}

const number = (value, unit = '') => (value === null || value === undefined ? '–' : `${value}${unit}`);
const ms = (value) => (value === null || value === undefined ? '–' : `${value.toFixed(1)} ms`);

export function Metrics() {
  const rows = sorted(store.metrics);
  return html`<h1>Metrics</h1>
    <p>Calls and errors as each function's runtime server counts them (its <code>/metrics</code>, as${' '}
      <code>kubeless-local ls</code> shows them; – when it serves none); durations over the calls the recorder
      keeps (<a href="?view=invocations">Invocations</a>). Updated every 2 s.</p>
    ${rows.length === 0
      ? html`<p>No functions in this session yet.</p>`
      : html`<table>
          <thead><tr><th scope="col">Function</th><th scope="col">Calls</th><th scope="col">Errors</th>
            <th scope="col">Error rate</th><th scope="col">p50</th><th scope="col">p95</th>
            <th scope="col">Recorded calls</th></tr></thead>
          <tbody>${rows.map((row) => html`<tr data-metrics=${row.name}>
            <th scope="row">${row.name}</th>
            <td data-testid="calls">${number(row.calls)}</td>
            <td data-testid="errors">${number(row.errors)}</td>
            <td data-testid="error-rate">${number(row.error_rate, ' %')}</td>
            <td data-testid="p50">${ms(row.p50_ms)}</td>
            <td data-testid="p95">${ms(row.p95_ms)}</td>
            <td data-testid="recorded">${row.recorded}</td>
          </tr>`)}</tbody>
        </table>`}`;
}

const KINDS = [
  ['http', 'HTTP (HTTPTrigger, through the gateway)', 'Host and path'],
  ['kafka', 'Kafka (KafkaTrigger)', 'Topic'],
  ['nats', 'NATS (NATSTrigger)', 'Topic'],
  ['cron', 'Cron (CronJobTrigger)', 'Schedule'],
];

export function Graph() {
  const rows = sorted(store.graph);
  return html`<h1>Trigger graph</h1>
    <p>What calls each function: every trigger of the project's manifests, what fires it, and the functions
      it calls (a Kafka or NATS trigger: those its selector picks). Recorded calls: those the recorder keeps.</p>
    ${rows.length === 0 ? html`<p>No triggers in this project.</p>` : null}
    ${KINDS.filter(([kind]) => rows.some((row) => row.kind === kind)).map(([kind, title, fired]) => html`
      <section aria-labelledby=${`graph-${kind}`}>
        <h2 id=${`graph-${kind}`}>${title}</h2>
        <table>
          <thead><tr><th scope="col">${fired}</th><th scope="col">Trigger</th><th scope="col">Selector</th>
            <th scope="col">→ Functions</th><th scope="col">Recorded calls</th></tr></thead>
          <tbody>${rows.filter((row) => row.kind === kind).map((row) => html`<tr data-trigger=${row.name}>
            <td><code>${row.from}</code>${row.url ? html`<div><code>${row.url}</code></div>` : null}</td>
            <th scope="row">${row.trigger}</th>
            <td>${row.selector ? html`<code>${row.selector}</code>` : '–'}</td>
            <td data-testid="edges">${row.functions.length || row.missing.length
              ? [...row.functions.map((fn) => `→ ${fn}`), ...row.missing.map((fn) => `→ ${fn} (no such function)`)].join(', ')
              : 'no function selected'}</td>
            <td data-testid="recorded">${row.recorded}</td>
          </tr>`)}</tbody>
        </table>
      </section>`)}`;
}
