def handler(event, context)
  loop {}
end
