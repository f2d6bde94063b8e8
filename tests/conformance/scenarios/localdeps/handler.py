import greeting  # a library in the function's folder, installed from its deps file (./libs/greeting)


def handler(event, context):
    return greeting.WORDS
