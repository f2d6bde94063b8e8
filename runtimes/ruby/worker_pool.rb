# Forked workers that run the user's function, so a runaway call can be killed (SIGKILL) without
# harming the server: a Ruby thread in a busy loop cannot be stopped safely with Timeout.
#
# Workers are forked from the server process after the function was loaded, so they hold the
# loaded code. Idle workers wait on a pipe for a call and are reused most recently used first, so
# sequential calls land on the same warm worker and module state persists as in the legacy
# in-process runtime; a worker forked ahead of demand (prefork) waits behind the warm ones. A worker
# that overruns its deadline is killed; a new one is forked on the next demand. After a burst the
# pool shrinks back: workers idle for `idle_seconds` at the bottom of the stack retire, down to
# `warm` workers (as the Python pool does).
class WorkerPool
  Worker = Struct.new(:pid, :to_child, :from_child, :generation, :idle_since)

  # After a call with a request this big, the server and the worker give memory back to the OS.
  BIG_BODY = 8 << 20

  begin
    require 'fiddle'
    MALLOC_TRIM = Fiddle::Function.new(Fiddle::Handle::DEFAULT['malloc_trim'], [Fiddle::TYPE_SIZE_T], Fiddle::TYPE_INT)
  rescue LoadError, Fiddle::DLError
    MALLOC_TRIM = nil # not glibc: freed memory is returned as that allocator does
  end

  # Ruby collects only as it allocates, and glibc keeps the holes freed strings leave in its heaps:
  # without this an idle process stays as big as its biggest requests.
  def self.release_memory
    GC.start
    MALLOC_TRIM&.call(0)
  end

  class Timeout < StandardError; end
  class Crashed < StandardError; end

  # per_call: a worker serves one call and is replaced (module state reset, as in legacy Python).
  def initialize(size, per_call: false, warm: 1, idle_seconds: 10.0, &serve)
    @size = size
    @warm = warm
    @idle_seconds = idle_seconds
    @per_call = per_call
    @serve = serve # runs in the child: payload -> result (both Marshal-able)
    @idle = []
    @count = 0
    @generation = 0
    @lock = Mutex.new
    @freed = ConditionVariable.new
    @master_pid = Process.pid
    @reaper = Thread.new { loop { sleep(@idle_seconds / 4); retire_idle } }
  end

  # New code was loaded: workers forked from now on get it; older ones are retired.
  def new_generation!
    stale = @lock.synchronize do
      @generation += 1
      @idle.slice!(0..).tap { |ws| @count -= ws.size }
    end
    stale.each { |w| kill(w) }
  end

  def prefork
    return unless @lock.synchronize { @count < @size && (@count += 1) }
    release(spawn_worker, fresh: true)
  rescue StandardError
    @lock.synchronize { @count -= 1 }
    raise
  end

  # Returns the child's result, or raises Timeout / Crashed.
  def call(payload, timeout)
    worker = acquire
    ok = runaway = false
    begin
      write_frame(worker.to_child, Marshal.dump(payload))
      data = read_frame(worker.from_child, Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout)
      raise Crashed, "worker #{worker.pid} exited during the call" if data.nil?
      result = Marshal.load(data)
      ok = true
      result
    rescue Errno::EPIPE, EOFError
      raise Crashed, "worker #{worker.pid} exited during the call"
    rescue Timeout
      runaway = true # killed mid-call with what the call started, which would run on: the runaway code stops now
      raise
    ensure
      ok && !@per_call ? release(worker) : discard(worker, runaway: runaway)
    end
  end

  def shutdown
    @reaper.kill
    ws = @lock.synchronize { @idle.slice!(0..) }
    ws.each { |w| kill(w) }
  end

  # The least recently used idle workers go first, while more than @warm workers exist.
  def retire_idle
    quiet_since = Process.clock_gettime(Process::CLOCK_MONOTONIC) - @idle_seconds
    retired = @lock.synchronize do
      gone = []
      while @count > @warm && !@idle.empty? && @idle.first.idle_since < quiet_since
        gone << @idle.shift
        @count -= 1
      end
      gone
    end
    retired.each { |w| kill(w) }
  end

  private

  def acquire
    @lock.synchronize do
      loop do
        return @idle.pop unless @idle.empty?
        if @count < @size
          @count += 1
          break
        end
        @freed.wait(@lock)
      end
    end
    begin
      spawn_worker
    rescue StandardError
      @lock.synchronize { @count -= 1; @freed.signal }
      raise
    end
  end

  # @idle is a stack: the top (last) is the most recently used worker; a fresh one goes underneath.
  def release(worker, fresh: false)
    worker.idle_since = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    retire = @lock.synchronize do
      if worker.generation == @generation
        fresh ? @idle.unshift(worker) : @idle.push(worker)
        false
      else
        @count -= 1
        true
      end.tap { @freed.signal }
    end
    kill(worker) if retire
  end

  def discard(worker, runaway: false)
    kill(worker, runaway: runaway)
    @lock.synchronize { @count -= 1; @freed.signal }
  end

  # `runaway`: with every process it started (a subprocess, a shell in a group of its own).
  def kill(worker, runaway: false)
    [worker.to_child, worker.from_child].each { |io| io.close unless io.closed? }
    kill_with_what_it_started(worker.pid) if runaway
    Process.kill(:KILL, worker.pid)
  rescue Errno::ESRCH
    nil
  ensure
    Process.wait(worker.pid) rescue nil
  end

  # The processes `pid` started and theirs, while they are its (Linux /proc; none found elsewhere).
  def started_by(pid)
    found = []
    parents = [pid]
    until parents.empty?
      Dir.glob("/proc/#{parents.pop}/task/*/children").each do |path|
        pids = (File.read(path).split.map(&:to_i) rescue [])
        found.concat(pids)
        parents.concat(pids)
      end
    end
    found
  end

  def signal_each(pids, signal)
    pids.each { |pid| Process.kill(signal, pid) rescue nil }
  end

  # SIGKILL `pid` and every process it started: each is stopped first so that none starts another or leaves the
  # tree meanwhile; read again until no new one shows (bounded). Killed alone, they would run on, under init.
  def kill_with_what_it_started(pid)
    stopped = [pid]
    signal_each(stopped, :STOP)
    5.times do
      new = started_by(pid) - stopped
      break if new.empty?

      signal_each(new, :STOP)
      stopped.concat(new)
    end
    signal_each(stopped, :KILL)
  end

  def spawn_worker
    req_r, req_w = IO.pipe
    res_r, res_w = IO.pipe
    generation = @generation
    pid = fork do
      keep = [req_r, res_w, $stdin, $stdout, $stderr]
      # Drop inherited sockets and other workers' pipes: a worker must not keep the listening
      # port or a client connection open, and must see EOF when the server goes away.
      ObjectSpace.each_object(IO) { |io| io.close unless keep.include?(io) || io.closed? rescue nil }
      child_loop(req_r, res_w)
    end
    req_r.close
    res_w.close
    Worker.new(pid, req_w, res_r, generation)
  end

  def child_loop(input, output)
    master = @master_pid
    # Exit if the server died without closing our pipe (e.g. SIGKILL while we were busy).
    Thread.new { loop { sleep 1; exit!(1) if Process.ppid != master } }
    trap(:HUP, 'IGNORE')
    trap(:TERM, 'SYSTEM_DEFAULT')
    trap(:INT, 'SYSTEM_DEFAULT')
    loop do
      data = read_frame(input, nil)
      exit!(0) if data.nil?
      result = @serve.call(Marshal.load(data))
      write_frame(output, Marshal.dump(result))
      next if data.bytesize < BIG_BODY
      data = result = nil
      WorkerPool.release_memory
    end
  rescue Errno::EPIPE, IOError
    exit!(0)
  ensure
    exit!(1)
  end

  def write_frame(io, bytes)
    io.write([bytes.bytesize].pack('N'), bytes)
  end

  # Reads one length-prefixed frame; nil on EOF; raises Timeout past deadline (monotonic seconds).
  def read_frame(io, deadline)
    head = read_exact(io, 4, deadline)
    return nil if head.nil?
    read_exact(io, head.unpack1('N'), deadline) || ''.b
  end

  def read_exact(io, n, deadline)
    buf = ''.b
    while buf.bytesize < n
      chunk = io.read_nonblock(n - buf.bytesize, exception: false)
      case chunk
      when nil then return nil
      when :wait_readable
        left = deadline && deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
        raise Timeout if left && left <= 0
        raise Timeout unless IO.select([io], nil, nil, left)
      else buf << chunk
      end
    end
    buf
  end
end
