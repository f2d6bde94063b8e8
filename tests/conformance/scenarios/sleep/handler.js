const { setTimeout: sleep } = require('timers/promises');

module.exports = {
  handler: async (event, context) => {
    await sleep(parseFloat(event.data) * 1000);
    return 'done';
  },
};
