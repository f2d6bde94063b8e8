// The dashboard page: a header with the views, the view the URL names, kept live by the event stream.
import { html, render, useEffect, useState } from './vendor/htm-preact.js';
import { connect } from './api.js';
import { setParams, VIEWS, view } from './route.js';
import { onChange, store } from './store.js';
import { Invocations } from './invocations.js';
import { Cron, Emit, Functions, Graph, Logs, Metrics, Topics } from './views.js';

const PAGES = { functions: Functions, logs: Logs, invocations: Invocations, cron: Cron, emit: Emit, topics: Topics, metrics: Metrics, graph: Graph };

function App() {
  const [, setVersion] = useState(0);
  useEffect(() => onChange(() => setVersion((v) => v + 1)), []);
  const current = view();
  const Page = PAGES[current];
  const go = (name) => (event) => {
    event.preventDefault();
    setParams({ view: name, fn: '', q: '', status: '', id: '' }, true);
  };
  return html`
    <header>
      <span class="brand">kubeless-local</span>
      <nav aria-label="views">
        ${VIEWS.map(([name, title]) => html`<a href=${`?view=${name}`} onClick=${go(name)}
          aria-current=${name === current ? 'page' : undefined}>${title}</a>`)}
      </nav>
      <span class="status" role="status" data-testid="connection">
        ${store.readOnly ? 'read-only · ' : ''}${store.connected ? 'live' : 'connecting…'}
      </span>
    </header>
    ${store.error ? html`<p class="failure" role="alert">${store.error}</p>` : null}
    <main><${Page} /></main>`;
}

render(html`<${App} />`, document.getElementById('app'));
connect();
