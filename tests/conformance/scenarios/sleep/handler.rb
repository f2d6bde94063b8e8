def handler(event, context)
  sleep(Float(event[:data]))
  'done'
end
