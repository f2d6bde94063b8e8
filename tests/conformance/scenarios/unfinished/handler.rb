# Prints a line it does not end (no newline): the runtime's access line follows it on stdout.
def handler(event, context)
  $stdout.write('no newline here')
  $stdout.flush
  'done'
end
