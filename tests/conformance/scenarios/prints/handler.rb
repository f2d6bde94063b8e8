# Prints a line naming its data, then answers the data.
def handler(event, context)
  text = event[:data].to_s
  puts "handling #{text}"
  text
end
