# Baseline: a bare WEBrick hello (Nagle off, as the runtime does).
require 'webrick'
require 'socket'
server = WEBrick::HTTPServer.new(BindAddress: '127.0.0.1', Port: ARGV[0].to_i, Logger: WEBrick::Log.new(File::NULL), AccessLog: [])
server.listeners.each { |s| s.setsockopt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1) }
server.mount_proc('/') { |_req, res| res.body = 'hello world' }
trap('TERM') { server.shutdown }
server.start
