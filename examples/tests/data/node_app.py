# Backend app of examples/tests/subscription_interop.rs (spec/subscription.md §7's app.py):
# answers with the backend's name (the NODE environment variable) and the Host the router
# forwarded, so every response says which backend a router chose.
import os
def application(env, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [("node=%s host=%s\n" % (os.environ.get('NODE', '?'), env.get('HTTP_HOST'))).encode()]
