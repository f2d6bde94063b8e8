module.exports = {
  handler: (event, context) => {
    if (event.data === 'boom') throw new Error('boom');
    return 'ok';
  },
};
