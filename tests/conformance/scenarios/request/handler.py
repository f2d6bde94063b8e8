def handler(event, context):
    request = event["extensions"]["request"]
    return "%s|%s" % (request.get_header("X-Test"), request.query.get("q"))
