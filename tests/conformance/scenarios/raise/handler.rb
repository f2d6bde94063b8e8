def handler(event, context)
  raise 'boom' if event[:data] == 'boom'
  'ok'
end
