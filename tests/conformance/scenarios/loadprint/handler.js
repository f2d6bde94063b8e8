// Output at load without a newline: the runtime's next line (in the pod, its log's next line) follows it.
process.stdout.write('loading config...');

module.exports = {
  handler: (event, context) => 'hello world',
};
