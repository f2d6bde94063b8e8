const fs = require('fs');

// Appends the body to data.txt (a file of its code) and to notes/log.txt (a folder it makes), in its working
// folder (/kubeless, an emptyDir the pod may write to); returns both.
module.exports = {
  handler: (event, context) => {
    fs.mkdirSync('notes', { recursive: true });
    for (const path of ['data.txt', 'notes/log.txt']) fs.appendFileSync(path, event.data);
    return fs.readFileSync('data.txt', 'utf-8').replace(/\n/g, '') + '|' + fs.readFileSync('notes/log.txt', 'utf-8');
  },
};
