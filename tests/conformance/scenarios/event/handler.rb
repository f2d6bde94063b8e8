require 'json'

def handler(event, context)
  data = event[:data]
  data = JSON.generate(data) unless data.is_a?(String)
  keys = %i[event-id event-type event-time event-namespace]
  JSON.generate({ 'data' => data }.merge(keys.to_h { |k| [k.to_s, event[k]] }))
end
