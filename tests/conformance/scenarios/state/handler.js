let calls = 0;

module.exports = {
  handler: (event, context) => {
    calls += 1;
    return String(calls);
  },
};
