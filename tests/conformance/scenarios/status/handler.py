import bottle


def handler(event, context):
    return bottle.HTTPResponse("created", status=201, headers={"X-Custom": "yes"})
