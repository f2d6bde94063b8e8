module.exports = {
  handler: (event, context) => {
    const req = event.extensions.request;
    return String(Buffer.isBuffer(req.body) ? req.body.length : 0);
  },
};
