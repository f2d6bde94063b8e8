# Installs the function's Gemfile into the deps folder (the current directory), as the Kubeless
# install step does (`bundle install --path`). Tries the gems already on the machine first
# (`--local`), then the network. Afterwards writes deps/load_path.txt, the bundle's require paths,
# which kubeless.rb prepends to $LOAD_PATH (this also covers `path:` gems, which are not copied).
# When the network install fails because the gem source cannot be reached, prints one line that
# says so instead of bundler's multi-line output.
require 'open3'
require 'rbconfig'
require 'socket'
require 'uri'

deps = Dir.pwd
gemfile = File.expand_path(ENV['KUBELESS_DEPS_FILE'] || ARGV[0] || 'Gemfile')
env = { 'BUNDLE_GEMFILE' => gemfile, 'BUNDLE_SILENCE_ROOT_WARNING' => '1', 'BUNDLE_PATH' => deps }
BUNDLE = [RbConfig.ruby, Gem.bin_path('bundler', 'bundle')].freeze

def bundle(env, *args)
  Open3.capture2e(env, *BUNDLE, *args)
end

NETWORK = [
  /Could not reach host (\S+?)\.? /, /Could not fetch specs from (\S+)/, /getaddrinfo/, /Failed to open TCP connection/,
  /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/, /Net::OpenTimeout|Net::ReadTimeout/,
  /certificate verify failed/, /Could not verify the SSL certificate/
].freeze

# Bundler reads any "401" or "403" in a fetch error as a source asking for credentials, the port in the
# source's URL included (a refused http://127.0.0.1:40177/): ask the source itself whether it answers.
def connect_error(flat)
  url = flat[%r{(?:Authentication is required|Access Denied|Bad username or password) for (https?://[^/\s]+)}i, 1]
  return '' unless url

  uri = URI(url)
  Socket.tcp(uri.host, uri.port, connect_timeout: 5).close
  ''
rescue SystemCallError, SocketError, IOError => e
  " #{e.class}: #{e.message}"
end

out, status = bundle(env, 'install', '--local')
unless status.success?
  out, status = bundle(env, 'install', '--retry', '0')
  unless status.success?
    flat = out.gsub(/\s+/, ' ')
    flat += connect_error(flat)
    if NETWORK.any? { |re| re.match?(flat) }
      host = flat[/Could not reach host (\S+?)\.? /, 1] || flat[%r{https?://[^/\s]+}] || 'the gem source'
      reason = { /ECONNREFUSED/ => 'connection refused', /getaddrinfo|Could not reach host/ => 'host unreachable',
                 /certif/ => 'TLS certificate not trusted; set SSL_CERT_FILE',
                 /Timeout|ETIMEDOUT/ => 'timed out' }.find { |re, _| re.match?(flat) }&.last || 'network error'
      warn "bundle install failed: cannot download gems from #{host} (#{reason}); " \
           'only gems installed on this machine or given with path: can be used'
    else
      $stderr.print out
    end
    exit status.exitstatus || 1
  end
end
print out

# The bundle's require paths, without Bundler at run time (no require override, no extra load time).
script = <<~RUBY
  require 'bundler'
  specs = Bundler.definition.specs.reject { |s| s.name == 'bundler' }
  puts specs.flat_map(&:full_require_paths).uniq
RUBY
paths, status = Open3.capture2e(env, RbConfig.ruby, '-e', script)
unless status.success?
  $stderr.print paths
  exit 1
end
File.write(File.join(deps, 'load_path.txt'), paths)
