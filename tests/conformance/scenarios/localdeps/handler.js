// a library in the function's folder, installed from its deps file (file:./libs/greeting); or `ms`, pinned by
// the package-lock.json beside it
const fs = require('fs');

module.exports = {
  handler: () => (fs.existsSync('libs/greeting') ? require('greeting').WORDS : require('ms/package.json').version),
};
