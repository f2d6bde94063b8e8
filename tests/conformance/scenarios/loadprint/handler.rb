# Output at load without a newline: the runtime's next line (in the pod, its log's next line) follows it.
$stdout.write('loading config...')
$stdout.flush

def handler(event, context)
  'hello world'
end
