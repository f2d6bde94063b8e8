module.exports = {
  handler: (event, context) => {
    const out = {};
    for (const k of ['function-name', 'timeout', 'runtime', 'memory-limit']) out[k] = context[k];
    out.env = process.env.MY_VAR === undefined ? null : process.env.MY_VAR;
    out.hostname = process.env.HOSTNAME === undefined ? null : process.env.HOSTNAME;
    return out;
  },
};
