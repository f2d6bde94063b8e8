const fs = require('fs');

module.exports = {
  handler: (event, context) => {
    if (event.data === 'sleep') {  // a runaway call: blocks the thread for 30 s
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30000);
    }
    // relative to the working folder, as /kubeless in the pod
    return fs.readFileSync('data.txt', 'utf-8').trim();
  },
};
