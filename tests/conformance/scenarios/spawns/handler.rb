def handler(event, context)
  # what a call may leave running: a child, and a shell in a process group of its own with a child of its own
  seconds = event[:data]
  spawn('sleep', seconds)
  spawn('sh', '-c', "sleep #{seconds} & wait", pgroup: true)
  sleep(Float(seconds))
  'done'
end
