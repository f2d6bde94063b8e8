# Allocate (and touch) as many MiB more as the body says; answer how many are held, two seconds later.
@held = [] # module state: what earlier calls allocated stays allocated

def handler(event, context)
  Integer(event[:data].to_s).times { @held << ('x' * (1 << 20)) }
  sleep(2)
  @held.length.to_s
end
