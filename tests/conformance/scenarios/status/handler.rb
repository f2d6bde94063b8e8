# A Rack response triplet sets status and headers (kubeless-local extension; legacy Kubeless only
# delivered the body).
def handler(event, context)
  [201, { 'X-Custom' => 'yes' }, ['created']]
end
