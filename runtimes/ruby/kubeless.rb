#!/usr/bin/env ruby
# Kubeless Ruby runtime server for kubeless-local (contract §5, Ruby column; see runtimes/README.md).
#
# Sinatra on WEBrick serves FUNC_PORT directly. The function file
# $KUBELESS_INSTALL_VOLUME/$MOD_NAME.rb is evaluated into an anonymous module, as Kubeless does,
# and each call runs in a forked worker (worker_pool.rb) so a timeout can really stop it.
require 'json'
require 'logger'
require 'socket'
require 'stringio'
require 'tmpdir'
require 'fileutils'

$stdout.sync = true
$stderr.sync = true

# prometheus-client-mmap keeps values in mmap'd files; give it a private folder, removed at exit,
# and keep its variable out of the function's environment.
METRICS_DIR = Dir.mktmpdir('kubeless-ruby-metrics')
ENV['prometheus_multiproc_dir'] = METRICS_DIR
require 'prometheus/client'
require 'prometheus/client/formats/text'
Prometheus::Client.configuration
ENV.delete('prometheus_multiproc_dir')
SERVER_PID = Process.pid
at_exit { FileUtils.rm_rf(METRICS_DIR) if Process.pid == SERVER_PID }

require 'sinatra/base'
require 'webrick'
require_relative 'worker_pool'

INSTALL_DIR = ENV.fetch('KUBELESS_INSTALL_VOLUME', '/kubeless')
MOD_NAME = ENV.fetch('MOD_NAME')
FUNC_HANDLER = ENV.fetch('FUNC_HANDLER')
FUNC_FILE = File.join(INSTALL_DIR, "#{MOD_NAME}.rb")
TIMEOUT_TEXT = ENV.fetch('FUNC_TIMEOUT', '180')
TIMEOUT = Float(TIMEOUT_TEXT) rescue 180.0
PORT = Integer(ENV.fetch('FUNC_PORT', '8080'))
BIND = ENV.fetch('KUBELESS_LOCAL_BIND', '0.0.0.0')
CONTROL = ENV['KUBELESS_LOCAL_CONTROL'] == '1'
WORKERS = Integer(ENV.fetch('KUBELESS_RUBY_WORKERS', '16'))
# warm (default): workers are reused, module state persists between calls (as in the legacy
# in-process Ruby runtime); per-call: every call gets a fresh fork of the loaded module.
PER_CALL = ENV['KUBELESS_LOCAL_ISOLATION'] == 'per-call'
EXIT_CANNOT_LISTEN = 4 # the port is taken (or not ours): the engine retries another port on this exit

CONTEXT = {
  'function-name': FUNC_HANDLER,
  timeout: TIMEOUT_TEXT,
  runtime: ENV['FUNC_RUNTIME'],
  'memory-limit': ENV['FUNC_MEMORY_LIMIT']
}.freeze

# Gems from the function's Gemfile: install.rb wrote the bundle's require paths (this covers
# `path:` gems too); installed gems are also reachable through GEM_HOME as in Kubeless.
load_path_file = ENV['KUBELESS_RUBY_DEPS'] && File.join(ENV['KUBELESS_RUBY_DEPS'], 'load_path.txt')
$LOAD_PATH.unshift(*File.readlines(load_path_file, chomp: true).reject(&:empty?)) if load_path_file && File.file?(load_path_file)

def control(event)
  puts "@kubeless-local #{JSON.generate(event)}" if CONTROL
end

# Under kubeless-local the engine shows the error (once); standalone it goes to stderr.
def report_load_failure(generation, message, standalone)
  if CONTROL
    control(event: 'load-failed', generation: generation, error: message)
  else
    $stderr.puts standalone
  end
end

class LoadFailed < StandardError; end

# Evaluates the function file into an anonymous module (as Kubeless does). `extend self` lets the
# handler call the file's other methods. The working folder is the stable install path, entered
# again on every load: the path is a link the engine moves to each new generation of the code, so
# relative reads (`File.read('data.txt')`) see the current code, as /kubeless in the pod.
def load_function
  Dir.chdir(INSTALL_DIR)
  source = File.read(FUNC_FILE)
  mod = Module.new
  mod.module_eval(source, FUNC_FILE, 1)
  mod.extend(mod)
  unless mod.respond_to?(FUNC_HANDLER, true)
    raise LoadFailed, "#{FUNC_FILE}:1: function '#{FUNC_HANDLER}' is not defined in #{MOD_NAME}.rb"
  end
  mod
end

# "file:line: message" for the control line and the log.
def describe_load_error(err)
  return err.message if err.is_a?(LoadFailed)
  return "#{err.class}: #{err.message}" if err.is_a?(SyntaxError) || err.message.include?(FUNC_FILE)
  where = (err.backtrace_locations || []).find { |l| l.absolute_path == FUNC_FILE || l.path == FUNC_FILE }
  where ? "#{FUNC_FILE}:#{where.lineno}: #{err.class}: #{err.message}" : "#{FUNC_FILE}: #{err.class}: #{err.message}"
end

# ---- in the worker: one call ------------------------------------------------------------------

def utf8_or_binary(bytes)
  text = bytes.dup.force_encoding(Encoding::UTF_8)
  text.valid_encoding? ? text : bytes
end

def build_event(env, body)
  data =
    if body.empty? then ''
    elsif env['CONTENT_TYPE'] == 'application/json' then JSON.parse(body)
    else utf8_or_binary(body)
    end
  {
    data: data,
    'event-id': env['HTTP_EVENT_ID'],
    'event-type': env['HTTP_EVENT_TYPE'],
    'event-time': env['HTTP_EVENT_TIME'],
    'event-namespace': env['HTTP_EVENT_NAMESPACE'],
    extensions: { request: Sinatra::Request.new(env) }
  }
end

def join_body(body)
  out = +''
  body.each { |part| out << part.to_s }
  body.close if body.respond_to?(:close)
  out
end

# Turns the handler's value into [status, headers, body] (plain data that crosses the pipe).
# String → 200 text/html (Sinatra's default); nil → 200 empty; Hash → JSON; a Rack triplet
# [status, headers, body] or Sinatra's [status, body] / Integer status; any other each-able → joined.
def to_response(value)
  html = { 'Content-Type' => 'text/html;charset=utf-8' }
  case value
  when nil then [200, html, '']
  when String then [200, html, value]
  when Integer then [value, {}, '']
  when Hash then [200, { 'Content-Type' => 'application/json' }, JSON.generate(value)]
  when Array
    if value.size == 3 && value[0].is_a?(Integer) && value[1].respond_to?(:to_h)
      headers = value[1].to_h.to_h { |k, v| [k.to_s, v.to_s] }
      [value[0], html.merge(headers), value[2].is_a?(String) ? value[2] : join_body(value[2])]
    elsif value.size == 2 && value[0].is_a?(Integer)
      [value[0], html, value[1].is_a?(String) ? value[1] : join_body(value[1])]
    else
      [200, html, join_body(value)]
    end
  else
    value.respond_to?(:each) ? [200, html, join_body(value)] : [200, html, value.to_s]
  end
end

def run_call((env, body))
  env = env.merge('rack.input' => StringIO.new(body), 'rack.errors' => $stderr)
  begin
    event = build_event(env, body)
  rescue JSON::ParserError => e
    return [:bad_request, "invalid JSON body (Content-Type: application/json): #{e.message}"]
  end
  value = $function.send(FUNC_HANDLER, event, CONTEXT)
  [:ok, to_response(value)]
rescue Exception => e # rubocop:disable Lint/RescueException -- a handler's `exit` must not kill the worker silently
  [:error, "#{e.class}: #{e.message}", (e.backtrace || []).first(20)]
end

# ---- in the server ----------------------------------------------------------------------------

REGISTRY = Prometheus::Client.registry
CALLS = REGISTRY.counter(:function_calls_total, 'Number of calls to user function')
FAILURES = REGISTRY.counter(:function_failures_total, 'Number of exceptions in user function')
DURATION = REGISTRY.histogram(:function_duration_seconds, 'Duration of user function in seconds')

# Only plain values of the Rack env cross to the worker, which rebuilds a Sinatra::Request from them.
def env_snapshot(env)
  env.select do |k, v|
    k.is_a?(String) && !k.start_with?('rack.request.') &&
      (v.is_a?(String) || v.is_a?(Integer) || v == true || v == false || v.nil?)
  end
end

# After a call with a big body, memory goes back to the OS (WorkerPool.release_memory) 0.2 s after
# the last such call: its answer is written by then, its request and body are garbage.
RELEASE = Queue.new
Thread.new do
  while RELEASE.pop
    loop do
      sleep 0.2
      break if RELEASE.empty?
      RELEASE.clear
    end
    WorkerPool.release_memory
  end
end

# Sinatra serves every path and method; /healthz and /metrics are the runtime's own.
class KubelessApp < Sinatra::Base
  set :environment, :production
  set :protection, false
  set :show_exceptions, false
  set :raise_errors, false
  set :dump_errors, true # the runtime's own errors, with backtrace, to stderr
  set :logging, false
  set :static, false
  set :default_encoding, 'utf-8'

  get('/healthz') { 'OK' }

  get('/metrics') do
    content_type Prometheus::Client::Formats::Text::CONTENT_TYPE
    Prometheus::Client::Formats::Text.marshal_multiprocess(METRICS_DIR)
  end

  %w[get post put patch delete options link unlink].each { |verb| send(verb, '/*') { call_function } }
  # Methods Sinatra has no route helper for (e.g. PROPFIND) end up here.
  error(Sinatra::NotFound) { call_function }

  helpers do
    def call_function
      response.headers.delete('X-Cascade') # set by Sinatra before falling back to NotFound
      label = { method: request.request_method }
      body = request.body.read.to_s.b
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      begin
        outcome = POOL.call([env_snapshot(request.env), body], TIMEOUT)
      rescue WorkerPool::Timeout
        outcome = [:timeout]
        FAILURES.increment(label)
        $stderr.puts "Function #{MOD_NAME}.#{FUNC_HANDLER} timed out after #{TIMEOUT_TEXT}s; worker killed"
        halt 408, { 'Content-Type' => 'text/plain' }, 'Timeout while processing the function'
      rescue WorkerPool::Crashed => e
        outcome = [:crashed]
        FAILURES.increment(label)
        $stderr.puts "Function #{MOD_NAME}.#{FUNC_HANDLER} failed: #{e.message}"
        halt 500, { 'Content-Type' => 'text/plain' }, 'Internal Server Error'
      ensure
        RELEASE.push(true) if body.bytesize >= WorkerPool::BIG_BODY
        # a request the function never saw (bad JSON) is the client's error, not a call
        unless outcome.nil? || outcome[0] == :bad_request
          CALLS.increment(label)
          DURATION.observe(label, Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
        end
      end
      halt 400, { 'Content-Type' => 'text/plain' }, outcome[1] if outcome[0] == :bad_request
      if outcome[0] == :error
        FAILURES.increment(label)
        $stderr.puts "Function #{MOD_NAME}.#{FUNC_HANDLER} raised #{outcome[1]}"
        outcome[2].each { |line| $stderr.puts "    #{line}" }
        halt 500, { 'Content-Type' => 'text/plain' }, 'Internal Server Error'
      end
      status, headers, text = outcome[1]
      halt status, headers, text
    end
  end
end

# Sinatra parses query and form params before routing; a body or query string it cannot parse
# (binary data sent as a form, `?a=%`) would fail the request before the function sees it. Mark
# both as parsed in the server; the worker's request object parses them on demand.
SKIP_PARAMS = lambda do |env|
  env['rack.request.form_input'] = env['rack.input']
  env['rack.request.form_hash'] = {}
  env['rack.request.query_string'] = env['QUERY_STRING']
  env['rack.request.query_hash'] = {}
  KubelessApp.call(env)
end

# WEBrick writes headers and body in separate packets; without TCP_NODELAY a keep-alive client
# waits ~40 ms for the delayed ACK on every request.
module NoDelay
  def run(sock)
    sock.setsockopt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1) rescue nil
    super
  end
end
WEBrick::HTTPServer.prepend(NoDelay)

# WEBrick answers 411 to a POST/PUT without Content-Length (e.g. `curl -X PUT`); treat it as empty.
module EmptyBodyWithoutLength
  def read_body(socket, block)
    return @body if socket && !self['transfer-encoding'] && !self['content-length'] && !@remaining_size
    super
  end
end
WEBrick::HTTPRequest.prepend(EmptyBodyWithoutLength)

# WEBrick serves each connection on a thread of its own and stops accepting at MaxClients; a client
# that sends its request head slowly (slow-loris) holds its thread meanwhile, and WEBrick bounds only
# each line read (RequestTimeout). So: many connections, as the other runtimes take, and a request
# head must arrive within HEAD_TIMEOUT in all (Node's headersTimeout is the same 60 s).
MAX_CONNECTIONS = 1024
HEAD_TIMEOUT = 60
module HeadDeadline
  def parse(socket = nil)
    WEBrick::Utils.timeout(HEAD_TIMEOUT, WEBrick::HTTPStatus::RequestTimeout) { super(socket) }
  end
end
WEBrick::HTTPRequest.prepend(HeadDeadline)

# Room for MAX_CONNECTIONS sockets under a default soft limit of 1024 open files.
def raise_open_files_limit
  soft, hard = Process.getrlimit(:NOFILE)
  wanted = MAX_CONNECTIONS + 256
  Process.setrlimit(:NOFILE, [wanted, hard].min, hard) if soft < wanted
rescue SystemCallError, NotImplementedError
  nil # serve with the limit we have
end

def start
  raise_open_files_limit
  begin
    $function = load_function
  rescue ScriptError, StandardError => e
    message = describe_load_error(e)
    report_load_failure(0, message, "Failed to load #{FUNC_FILE}: #{message}")
    exit 1
  end

  Object.const_set(:POOL, WorkerPool.new(WORKERS, per_call: PER_CALL) { |payload| run_call(payload) })
  generation = 0
  reload_r, reload_w = IO.pipe

  begin
    server = WEBrick::HTTPServer.new(
      BindAddress: BIND, Port: PORT, MaxClients: MAX_CONNECTIONS,
      Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN),
      AccessLog: [[$stdout, WEBrick::AccessLog::COMBINED_LOG_FORMAT]],
      StartCallback: -> { control(event: 'ready', generation: generation) }
    )
  rescue SystemCallError, SocketError => e
    # not a load failure: the code is fine, the port is not
    $stderr.puts "cannot listen on #{BIND}:#{PORT}: #{e.message}"
    exit EXIT_CANNOT_LISTEN
  end
  server.mount('/', Rack::Handler::WEBrick, SKIP_PARAMS)
  POOL.prefork # after the bind: a port conflict fails before any worker exists

  # SIGHUP: evaluate the file again; on failure keep the code that is serving now.
  Thread.new do
    while reload_r.read(1)
      generation += 1
      serving_dir = (Dir.pwd rescue INSTALL_DIR) # the code that serves now (the link as resolved at its load)
      begin
        $function = load_function
        POOL.new_generation!
        POOL.prefork # the first call after a reload does not wait for a fork
        puts "Reloaded #{FUNC_FILE} (generation #{generation})"
        control(event: 'ready', generation: generation)
      rescue ScriptError, StandardError => e
        message = describe_load_error(e)
        # back where the code that keeps serving lives: workers forked later inherit this folder, and the
        # engine deletes the failed generation that load_function entered
        Dir.chdir(serving_dir) rescue nil
        report_load_failure(generation, message, "Reload of #{FUNC_FILE} failed, keeping the previous code: #{message}")
      end
    end
  end
  trap(:HUP) { reload_w.write_nonblock('.', exception: false) }
  %i[TERM INT].each { |sig| trap(sig) { server.shutdown } }

  puts "Serving #{FUNC_FILE} (#{FUNC_HANDLER}) on #{BIND}:#{PORT}, timeout #{TIMEOUT_TEXT}s"
  server.start
ensure
  POOL.shutdown if defined?(POOL)
end

start
