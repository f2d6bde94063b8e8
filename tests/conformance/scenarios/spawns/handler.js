const { execSync, spawn } = require('child_process');

// What a call may leave running: a shell in a session of its own with a child of its own, and a child the call
// waits for, blocking its thread (a stuck call's worker is stopped: what it started goes with it).
module.exports = {
  handler: (event) => {
    const seconds = event.data;
    spawn('sh', ['-c', `sleep ${seconds} & wait`], { detached: true, stdio: 'ignore' });
    execSync(`sleep ${seconds}`);
    return 'done';
  },
};
