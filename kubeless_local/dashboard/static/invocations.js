// The Invocations view: every recorded call (whoever sent it), live; one call's request, answer and log lines;
// the commands that send it again; replay as recorded or edited, with how the answer differs.
// The filters and the call shown live in the URL (?view=invocations&fn=hello&status=error&id=…).
import { html, useEffect, useState } from './vendor/htm-preact.js';
import { api } from './api.js';
import { param, setParams } from './route.js';
import { addInvocations, changed, store } from './store.js';
import { Result, sorted, useAction } from './views.js';

const OUTCOMES = [['', 'All'], ['ok', 'OK (below 400)'], ['error', 'Errors (400 and up, or no answer)']];
const PAGE = 100; // older calls asked for at a time
const HEX_BYTES = 4096; // of a binary body shown as hex
const NOT_COPIED = new Set(['host', 'content-length', 'connection', 'user-agent', 'accept-encoding']);

const failed = (row) => row.status === 0 || row.status >= 400;
const matches = (fn, status) => (row) =>
  (!fn || row.function === fn) && (!status || (status === 'error') === failed(row));
const time = (seconds) => new Date(seconds * 1000).toLocaleTimeString();
const quoted = (text) => `'${String(text).replaceAll("'", "'\\''")}'`; // for a POSIX shell

export function Invocations() {
  const fn = param('fn');
  const status = param('status');
  const shown = store.invocations.filter(matches(fn, status));
  const [older, loadOlder] = useAction();
  const more = () =>
    loadOlder(async () => {
      const seqs = store.invocations.filter((row) => row.seq).map((row) => row.seq);
      const query = new URLSearchParams({ function: fn, outcome: status, limit: PAGE });
      if (seqs.length) query.set('before', Math.min(...seqs));
      const rows = await api('GET', `/api/invocations?${query}`);
      addInvocations(rows, true);
      changed();
      return `${rows.length} older calls`;
    });
  return html`
    <h1>Invocations</h1>
    <div class="toolbar">
      <label>Function <select value=${fn} onChange=${(e) => setParams({ fn: e.target.value })}>
        <option value="">All</option>
        ${sorted(store.functions).map((row) => html`<option value=${row.name}>${row.name}</option>`)}
      </select></label>
      <label>Status <select value=${status} onChange=${(e) => setParams({ status: e.target.value })}>
        ${OUTCOMES.map(([value, title]) => html`<option value=${value}>${title}</option>`)}
      </select></label>
      <button type="button" onClick=${more}>Load older calls</button>
      ${older && older.value ? html`<span role="status">${older.value}</span>` : null}
    </div>
    ${param('id') ? html`<${Detail} id=${param('id')} key=${param('id')} />` : null}
    ${shown.length === 0
      ? html`<p>No recorded calls${fn || status ? ' match' : ' yet'}.</p>`
      : html`<table>
          <thead><tr>
            <th scope="col">Time</th><th scope="col">Function</th><th scope="col">Source</th>
            <th scope="col">Request</th><th scope="col">Status</th><th scope="col">Duration</th>
          </tr></thead>
          <tbody>${shown.slice(0, 500).map((row) => html`<tr data-testid="invocation" data-invocation=${row.id}
              class=${row.id === param('id') ? 'selected' : ''}>
            <td><a href=${`?view=invocations&id=${row.id}`}
              onClick=${(e) => { e.preventDefault(); setParams({ id: row.id }, true); }}>${time(row.started)}</a></td>
            <td>${row.function}</td>
            <td>${row.source}${row.trigger ? ` (${row.trigger})` : ''}</td>
            <td><code>${row.method} ${row.path}</code></td>
            <td class=${failed(row) ? 'failure' : ''} data-testid="status">${row.status || 'no answer'}${row.timeout ? ' (timeout)' : ''}</td>
            <td>${row.duration_ms.toFixed(1)} ms</td>
          </tr>`)}</tbody>
        </table>`}`;
}

function Detail({ id }) {
  const [record, setRecord] = useState(null);
  const [failure, setFailure] = useState('');
  useEffect(() => {
    api('GET', `/api/invocations/${encodeURIComponent(id)}`).then(setRecord, (error) => setFailure(error.message));
  }, [id]);
  if (failure) return html`<p class="failure" role="alert">${failure}</p>`;
  if (!record) return html`<p role="status">Loading call ${id}…</p>`;
  const { request, response } = record;
  return html`<section class="detail" aria-labelledby="invocation-title" data-testid="invocation-detail">
    <h2 id="invocation-title">Call ${record.id} of ${record.function}${' '}<button type="button" class="quiet"
      onClick=${() => setParams({ id: '' }, true)}>Close</button></h2>
    <p>${[
      `${record.source}${record.trigger ? ` (trigger ${record.trigger})` : ''}${record.replay_of ? `, replay of ${record.replay_of}` : ''}`,
      new Date(record.started * 1000).toLocaleString(),
      `${record.duration_ms.toFixed(1)} ms`,
      `generation ${record.generation ?? '–'}`,
      ...(record.timeout ? ['timed out'] : []),
      ...(record.error ? [record.error] : []),
    ].join(' · ')}</p>
    <div class="columns">
      <div>
        <h3>Request</h3>
        <p><code>${request.method} ${request.path}${request.query ? `?${request.query}` : ''}</code></p>
        <${Headers} headers=${request.headers} />
        <${Body} body=${request.body} label="request body" />
      </div>
      <div>
        <h3>Response</h3>
        <p>Status <strong data-testid="response-status">${response.status || 'no answer'}</strong></p>
        <${Headers} headers=${response.headers} />
        <${Body} body=${response.body} label="response body" />
      </div>
    </div>
    <h3>Log lines</h3>
    <pre class="log" aria-label="the call's log lines">${record.logs.map((line) => line.text).join('\n') || '(none)'}</pre>
    <p><a href=${`?view=logs&fn=${encodeURIComponent(record.function)}`}>All of ${record.function}'s log lines</a></p>
    <${Commands} record=${record} />
    <${Replay} record=${record} />
    <${SaveTest} record=${record} />
  </section>`;
}

function Headers({ headers }) {
  if (!headers.length) return html`<p>No headers.</p>`;
  return html`<table class="compact"><tbody>${headers.map(
    ([name, value]) => html`<tr><th scope="row">${name}</th><td><code>${value}</code></td></tr>`
  )}</tbody></table>`;
}

function bytesOf(body) {
  if ('base64' in body) return Uint8Array.from(atob(body.base64), (c) => c.charCodeAt(0));
  return new TextEncoder().encode(body.text);
}

function hex(body) {
  const bytes = bytesOf(body).slice(0, HEX_BYTES);
  const rows = [];
  for (let at = 0; at < bytes.length; at += 16) {
    const chunk = [...bytes.slice(at, at + 16)];
    const text = chunk.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
    rows.push(`${at.toString(16).padStart(6, '0')}  ${chunk.map((b) => b.toString(16).padStart(2, '0')).join(' ').padEnd(48)}  ${text}`);
  }
  return rows.join('\n');
}

function shownAs(body, as) {
  if ('base64' in body || as === 'hex') return hex(body);
  if (as === 'text') return body.text;
  try {
    return JSON.stringify(JSON.parse(body.text), null, 2);
  } catch {
    return body.text;
  }
}

// A body as JSON (pretty), text or hex; bytes that are not UTF-8 only as hex. Always text nodes, never HTML.
function Body({ body, label }) {
  const [as, setAs] = useState('auto');
  if (!body.size) return html`<p>No body.</p>`;
  return html`<div>
    <label class="inline">Show ${label} as <select value=${as} onChange=${(e) => setAs(e.target.value)}>
      <option value="auto">JSON or text</option><option value="text">text</option><option value="hex">hex</option>
    </select></label>
    ${body.truncated ? html`<p class="warning">${body.size} bytes; the first 256 KiB were kept.</p>` : null}
    <pre class="result" aria-label=${label}>${shownAs(body, as)}</pre>
  </div>`;
}

function Commands({ record }) {
  const { request } = record;
  const row = store.functions.get(record.function);
  const url = `${row && row.url ? row.url.replace(/\/$/, '') : 'http://127.0.0.1:8080'}${request.path}${request.query ? `?${request.query}` : ''}`;
  const data = request.body.text ?? '';
  const headers = request.headers.filter(([name]) => !NOT_COPIED.has(name.toLowerCase()));
  const curl = [`curl -X ${request.method} ${quoted(url)}`, ...headers.map(([n, v]) => `-H ${quoted(`${n}: ${v}`)}`)];
  if (data) curl.push(`--data-binary ${quoted(data)}`);
  const method = ['GET', 'POST'].includes(request.method) ? '' : ` -X ${request.method}`;
  const withData = data ? ` --data ${quoted(data)}` : '';
  const commands = [
    ['curl', curl.join(' \\\n  ')],
    ['kubeless-local call', `kubeless-local call ${record.function}${method}${withData}`],
    ['kubeless function call', `kubeless function call ${record.function}${withData}`],
    ['kubeless-local replay', `kubeless-local replay ${record.id}`],
  ];
  return html`<h3>Send it again from a shell</h3>
    ${'base64' in request.body ? html`<p class="warning">The request body is not text: the commands leave it out.</p>` : null}
    ${commands.map(([title, text]) => html`<div class="command">
      <pre aria-label=${`as ${title}`}>${text}</pre>
      <button type="button" class="quiet" onClick=${() => navigator.clipboard?.writeText(text)}>Copy as ${title}</button>
    </div>`)}`;
}

function Replay({ record }) {
  const [result, run] = useAction();
  const [editing, setEditing] = useState(false);
  const send = (request) =>
    run(() => api('POST', `/api/invocations/${encodeURIComponent(record.id)}/replay`, request ? { request } : {}));
  const submit = (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    send({
      method: form.get('method'),
      path: form.get('path'),
      query: form.get('query'),
      body: { text: form.get('body') },
    });
  };
  const { request } = record;
  return html`<h3>Replay</h3>
    <div class="toolbar">
      <button type="button" disabled=${store.readOnly} onClick=${() => send(null)}>Replay as recorded</button>
      <button type="button" class="quiet" disabled=${store.readOnly} onClick=${() => setEditing(!editing)}>
        ${editing ? 'Close the editor' : 'Edit and replay…'}</button>
    </div>
    ${editing
      ? html`<form onSubmit=${submit} aria-labelledby="edit-title">
          <h4 id="edit-title">The request to send (headers as recorded; secret ones keep their value)</h4>
          <label>Method <input name="method" value=${request.method} /></label>
          <label>Path <input name="path" value=${request.path} /></label>
          <label>Query <input name="query" value=${request.query} /></label>
          <label class="wide" for="edit-body">Body</label>
          <textarea id="edit-body" class="wide" name="body" rows="4">${request.body.text ?? ''}</textarea>
          <button type="submit" disabled=${store.readOnly}>Replay edited</button>
        </form>`
      : null}
    ${result && result.value ? html`<${Diff} outcome=${result.value} />` : html`<${Result} result=${result} label="replay result" />`}`;
}

// How the replay's answer differs from the original's: status, headers (Date left out), body as a unified diff.
function Diff({ outcome }) {
  const { diff, replay } = outcome;
  const link = replay.id
    ? html`<a href=${`?view=invocations&id=${replay.id}`}
        onClick=${(e) => { e.preventDefault(); setParams({ id: replay.id }, true); }}>call ${replay.id}</a>`
    : 'a call not recorded';
  return html`<div class="diff" data-testid="replay-diff" role="status">
    <p>Replayed as ${link}, answered <strong>${replay.response.status}</strong>:${
      diff.same ? ' the same answer as the original.' : ' the answer differs.'}</p>
    ${diff.status ? html`<p>Status ${diff.status[0]} → ${diff.status[1]}</p>` : null}
    ${Object.keys(diff.headers).length
      ? html`<table class="compact"><thead><tr><th scope="col">Header</th><th scope="col">Original</th><th scope="col">Replay</th></tr></thead>
          <tbody>${Object.entries(diff.headers).map(([name, [before, after]]) => html`<tr>
            <th scope="row">${name}</th><td><code>${before ?? '(none)'}</code></td><td><code>${after ?? '(none)'}</code></td></tr>`)}</tbody></table>`
      : null}
    ${diff.body.length
      ? html`<pre aria-label="body diff">${diff.body.map((line) => html`<div class=${
          line.startsWith('+') && !line.startsWith('+++') ? 'diff-add' : line.startsWith('-') && !line.startsWith('---') ? 'diff-del' : ''
        }>${line}</div>`)}</pre>`
      : null}
  </div>`;
}

// The call as a pytest test for the plugin's `kubeless` fixture: shown, copied, or saved into the project's tests/.
function SaveTest({ record }) {
  const [test, setTest] = useState(null);
  const [saved, save] = useAction();
  const path = `/api/invocations/${encodeURIComponent(record.id)}/pytest`;
  useEffect(() => {
    api('GET', path).then(setTest, (error) => setTest({ error: error.message }));
  }, [path]);
  if (!test) return null;
  if (test.error) return html`<p class="failure" role="alert">${test.error}</p>`;
  return html`<h3>As a pytest test</h3>
    <p>For the <code>kubeless</code> fixture of kubeless-local's pytest plugin; it sends the same request and
      checks the recorded answer.</p>
    <pre aria-label="pytest test">${test.source}</pre>
    <div class="toolbar">
      <button type="button" disabled=${store.readOnly} onClick=${() => save(() => api('POST', path, {}))}>
        Save as tests/${test.file}</button>
      <button type="button" class="quiet" onClick=${() => navigator.clipboard?.writeText(test.source)}>Copy the test</button>
    </div>
    ${saved && saved.value
      ? html`<p role="status" data-testid="saved-test">Saved as ${saved.value.path}</p>`
      : html`<${Result} result=${saved} label="save result" />`}`;
}
