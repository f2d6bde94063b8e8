require 'json'

def handler(event, context)
  keys = %i[function-name timeout runtime memory-limit]
  JSON.generate(keys.to_h { |k| [k.to_s, context[k]] }.merge('env' => ENV['MY_VAR'], 'hostname' => ENV['HOSTNAME']))
end
