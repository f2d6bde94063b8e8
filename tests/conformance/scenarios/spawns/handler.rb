def handler(event, context)
  # what a call may leave running: a child, and a shell in a process group of its own with a child of its own
  seconds = event[:data]
  spawn('sleep', seconds)
  spawn('sh', '-c', "sleep #{seconds} & wait", pgroup: true)
  # sleep the time out, whatever signal (SIGCHLD of an earlier call's child) may end a sleep early
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + Float(seconds)
  while (left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)) > 0
    sleep(left)
  end
  'done'
end
