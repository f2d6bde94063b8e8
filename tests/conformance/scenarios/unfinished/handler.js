// Prints a line it does not end (no newline): the runtime's access line follows it on stdout.
module.exports = {
  handler: (event, context) => {
    process.stdout.write('no newline here');
    return 'done';
  },
};
