def handler(event, context)
  event[:data].bytesize.to_s
end
