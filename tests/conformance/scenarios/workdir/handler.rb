# `sleep`: a runaway call (30 s); otherwise data.txt beside the handler, read by a relative path.
def handler(event, context)
  if event[:data] == 'sleep'
    sleep(30)
    return 'woke up'
  end
  File.read('data.txt').strip
end
