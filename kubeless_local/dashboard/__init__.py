"""The dashboard `dev` serves on 127.0.0.1: the session's functions, logs, recorded calls, cron, topics,
metrics, trigger graph and actions in a browser, live. No click here: the commands start it (`dev`) and open
it (`kubeless-local dashboard`).

    guard.py       who may use it (Host, Origin, one-time login → cookie, read-only)
    source.py      the one seam to the engine (Source; SessionSource reads a DevSession in this process)
    feed.py        the page's rows (functions, cron, topics, triggers, metrics) added to the session's event bus
    saved_test.py  a recorded call as a pytest test for the plugin's `kubeless` fixture
    server.py      the HTTP server: static files, the JSON routes, the event stream
    static/        the page: plain ES modules, vendored libraries with their licences, no build step
"""
