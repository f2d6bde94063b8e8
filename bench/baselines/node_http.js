// Baseline: a bare Node.js `http` hello (keep-alive, Nagle off by default in Node).
require('http').createServer((req, res) => res.end('hello world')).listen(+process.argv[2], '127.0.0.1');
