# The offset of the local time zone from UTC, as +HHMM: a pod's is +0000 (no TZ, the image's UTC).
def handler(event, context)
  Time.now.strftime('%z')
end
