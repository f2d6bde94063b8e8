require 'json'

# Called for every request. event[:data] is the body: a Hash/Array when Content-Type is exactly
# application/json, else a String ('' when there is none). event[:'event-id'], [:'event-type'],
# [:'event-time'], [:'event-namespace'] carry the trigger's headers; event[:extensions][:request]
# is the Sinatra request (headers, params, path).
# context: { :'function-name', :timeout, :runtime, :'memory-limit' }.
#
# Return a String for the body, or [status, headers, body] to set the status code and headers.
def handler(event, context)
  data = event[:data]
  return 'hello world' if data == ''

  "hello, you sent: #{data.is_a?(String) ? data : JSON.generate(data)}"
end
