const fs = require('fs');

// Waits (up to 60 s) until the file named by the body exists, then returns data.txt read by a path
// relative to the working folder: a call still in flight while the code is saved.
module.exports = {
  handler: async (event, context) => {
    const release = String(event.data);
    const deadline = Date.now() + 60000;
    while (!fs.existsSync(release) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return fs.readFileSync('data.txt', 'utf-8').trim();
  },
};
