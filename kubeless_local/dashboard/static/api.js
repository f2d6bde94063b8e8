// The dashboard's API (same origin, the session cookie) and its event stream.
import { apply, changed, loadState, seenBefore, store } from './store.js';

export async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  const answer = await fetch(path, options);
  const value = await answer.json().catch(() => ({ error: answer.statusText }));
  if (!answer.ok) throw new Error(value.error || `${answer.status} ${answer.statusText}`);
  return value;
}

let stream = null;

// The state, then the stream from the state's last event id; a `reset` (the page was away too long, or
// dev restarted) starts over. The browser reconnects a dropped stream itself, sending Last-Event-ID.
export async function connect() {
  if (stream) stream.close();
  stream = null;
  try {
    const state = await api('GET', '/api/state');
    const lines = await api('GET', '/api/logs?tail=1000');
    loadState(state, lines);
    store.error = '';
    open(state.last_id, seenBefore(lines));
  } catch (error) {
    store.error = `${error.message}; trying again…`;
    store.connected = false;
    setTimeout(connect, 1000);
  }
  changed();
}

function open(after, duplicate) {
  stream = new EventSource(`/api/events?after=${after}`);
  stream.onopen = () => {
    store.connected = true;
    changed();
  };
  stream.onerror = () => {
    store.connected = false;
    changed();
  };
  for (const [kind, update] of Object.entries(apply)) {
    stream.addEventListener(kind, (event) => {
      const row = JSON.parse(event.data);
      if (kind === 'log' && duplicate(row)) return;
      update(row);
      changed();
    });
  }
  stream.addEventListener('reset', () => connect());
}
