# The characters of data.txt ("é") read as text, as Encoding.default_external says: 1 in the pod (LANG=C.UTF-8).
def handler(event, context)
  File.read('data.txt').strip.length.to_s
end
