// Where the page is: the view and its filters live in the URL (?view=logs&fn=hello&q=error), so a reload
// or a shared link shows the same thing.
import { changed } from './store.js';

export const VIEWS = [
  ['functions', 'Functions'],
  ['logs', 'Logs'],
  ['invocations', 'Invocations'],
  ['cron', 'Cron'],
  ['emit', 'Emit'],
  ['topics', 'Topics and dead letters'],
  ['metrics', 'Metrics'],
  ['graph', 'Trigger graph'],
];

export function param(name, fallback = '') {
  return new URLSearchParams(location.search).get(name) ?? fallback;
}

export function view() {
  const wanted = param('view', 'functions');
  return VIEWS.some(([name]) => name === wanted) ? wanted : 'functions';
}

// Change some parameters; `push` makes a new history entry (a new view), else the URL is replaced (typing).
export function setParams(changes, push = false) {
  const query = new URLSearchParams(location.search);
  for (const [name, value] of Object.entries(changes)) {
    if (value === '' || value === null || value === undefined) query.delete(name);
    else query.set(name, value);
  }
  const url = `${location.pathname}?${query}`;
  if (push) history.pushState(null, '', url);
  else history.replaceState(null, '', url);
  changed();
}

addEventListener('popstate', changed);
