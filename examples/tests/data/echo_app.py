# Echo app of spec/uwsgi-packet.md §8, used by examples/tests/uwsgi_curl_interop.rs:
# returns every str environ item, the key order and the request body as JSON.
import json
def application(environ, start_response):
    body = b''
    try:
        cl = int(environ.get('CONTENT_LENGTH') or 0)
    except ValueError:
        cl = 0
    inp = environ['wsgi.input']
    body = inp.read(cl) if cl > 0 else inp.read()
    out = {}
    for k, v in environ.items():
        if isinstance(v, str):
            out[k] = v
    out['__body__'] = body.decode('latin-1')
    out['__keys_in_order__'] = [k for k in environ.keys() if isinstance(environ[k], str)]
    data = json.dumps(out, sort_keys=True).encode()
    start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(data)))])
    return [data]
