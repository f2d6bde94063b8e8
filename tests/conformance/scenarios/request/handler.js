module.exports = {
  handler: (event, context) => {
    const req = event.extensions.request;
    return `${req.get('X-Test')}|${req.query.q}`;
  },
};
