# Waits (up to 60 s) until the file named by the body exists, then returns data.txt read by a path
# relative to the working folder: a call still in flight while the code is saved.
def handler(event, context)
  release = event[:data].to_s
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 60
  sleep(0.01) until File.exist?(release) || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
  File.read('data.txt').strip
end
