require 'json'

def handler(event, context)
  data = event[:data]
  data.is_a?(String) ? data : JSON.generate(data)
end
