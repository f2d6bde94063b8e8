module.exports = {
  handler: (event, context) => {
    for (;;) { /* burns CPU until the runtime stops it */ }
  },
};
