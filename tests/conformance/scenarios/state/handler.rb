@calls = 0

def handler(event, context)
  @calls += 1
  @calls.to_s
end
