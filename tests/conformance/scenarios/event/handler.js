module.exports = {
  handler: (event, context) => {
    const data = typeof event.data === 'string' ? event.data : JSON.stringify(event.data);
    const out = { data };
    for (const k of ['event-id', 'event-type', 'event-time', 'event-namespace']) {
      out[k] = event[k] === undefined ? null : event[k];
    }
    return out;
  },
};
