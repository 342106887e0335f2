"""A misbehaving-on-purpose HTTP server on 127.0.0.1 for the download tests.

Built from the standard library's ThreadingHTTPServer with Range support
added. Each path gets a `Behaviour` (serve bytes, drop the connection
mid-body, ignore Range, fail with 500 a few times, stall, 404, ...) and
every request is logged, so a test can assert what the client sent or that
it sent nothing at all.

    with LocalServer() as server:
        server.serve('/file', Behaviour(body=b'...', drop_after=1000))
        download.fetch(server.url('/file'), path)
        server.requests('/file')   # -> [{'range': None}, {'range': 'bytes=1000-'}]
"""
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEND_PIECE = 16 * 1024  # Bytes written per socket send, so delays and drops land mid-body.


@dataclass
class Behaviour:
    """How the server answers GET for one path. Counters count down as they are used."""
    body: bytes = b''
    status: int | None = None           # answer this status (e.g. 404) with a short text body, always
    fail_times: int = 0                 # answer fail_status this many times before behaving
    fail_status: int = 500
    drop_after: int | None = None       # close the socket after this many body bytes ...
    drops: int = 1                      # ... this many times, then send whole bodies
    ignore_range: bool = False          # always 200 with the whole body
    wrong_range_start_times: int = 0    # answer 206 starting one byte early this many times
    stall_seconds: float = 0.0          # go silent this long ...
    stall_times: int = 0                # ... this many times ...
    stall_after: int | None = None      # ... after this many body bytes (None: before the headers)
    piece_delay: float = 0.0            # sleep between SEND_PIECE writes: a slow server
    pause_after: int | None = None      # stop after this many body bytes until `gate` is set
    gate: threading.Event = field(default_factory=threading.Event)


class LocalServer:
    """ThreadingHTTPServer on an ephemeral port, serving `Behaviour`s by path."""

    def __init__(self):
        self.behaviours = {}
        self.log = []
        self.lock = threading.Lock()
        # Set on close so stalls and pauses end at once instead of holding threads.
        self.stopping = threading.Event()
        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), _make_handler(self))
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={'poll_interval': 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        self.stopping.set()
        for behaviour in self.behaviours.values():
            behaviour.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def serve(self, path, behaviour):
        self.behaviours[path] = behaviour
        return self.url(path)

    def url(self, path):
        host, port = self.httpd.server_address[:2]
        return f'http://{host}:{port}{path}'

    def requests(self, path):
        """The logged requests for path, oldest first: dicts with 'range' and 'user_agent'."""
        with self.lock:
            return [entry for entry in self.log if entry['path'] == path]


def _make_handler(server):

    class Handler(BaseHTTPRequestHandler):

        def log_message(self, format, *args):
            pass  # Keep pytest output clean; the request log is the record.

        def do_GET(self):
            with server.lock:
                server.log.append({'path': self.path, 'range': self.headers.get('Range'),
                                   'user_agent': self.headers.get('User-Agent')})
                behaviour = server.behaviours.get(self.path)
                if behaviour is None:
                    plan = None
                else:
                    plan = self._take_plan(behaviour)
            if behaviour is None:
                self._send_text(404, 'no such path')
                return
            self._answer(behaviour, plan)

        def _take_plan(self, behaviour):
            """Decide, under the lock, which one-off misbehaviours this request uses up."""
            plan = {'fail': False, 'drop': False, 'stall': False, 'wrong_start': False}
            if behaviour.fail_times > 0:
                behaviour.fail_times -= 1
                plan['fail'] = True
                return plan
            if behaviour.stall_times > 0:
                behaviour.stall_times -= 1
                plan['stall'] = True
            if behaviour.drop_after is not None and behaviour.drops > 0:
                behaviour.drops -= 1
                plan['drop'] = True
            if behaviour.wrong_range_start_times > 0 and self.headers.get('Range'):
                behaviour.wrong_range_start_times -= 1
                plan['wrong_start'] = True
            return plan

        def _answer(self, behaviour, plan):
            if behaviour.status is not None:
                self._send_text(behaviour.status, f'status {behaviour.status} on purpose')
                return
            if plan['fail']:
                self._send_text(behaviour.fail_status, 'failing on purpose')
                return
            if plan['stall'] and behaviour.stall_after is None:
                server.stopping.wait(behaviour.stall_seconds)

            body = behaviour.body
            total = len(body)
            start = 0
            requested = re.fullmatch(r'bytes=(\d+)-', self.headers.get('Range') or '')
            if requested and not behaviour.ignore_range:
                start = int(requested[1])
                if start >= total:
                    self.send_response(416)
                    self.send_header('Content-Range', f'bytes */{total}')
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                if plan['wrong_start']:
                    start = max(start - 1, 0)
                self.send_response(206)
                self.send_header('Content-Range', f'bytes {start}-{total - 1}/{total}')
            else:
                self.send_response(200)
            self.send_header('Content-Type', 'application/octet-stream')
            self.send_header('Content-Length', str(total - start))
            self.end_headers()

            sent = 0
            remaining = body[start:]
            try:
                while sent < len(remaining):
                    if plan['drop'] and sent >= behaviour.drop_after:
                        # Closing with Content-Length unmet is what a dropped connection looks like.
                        self.close_connection = True
                        return
                    if plan['stall'] and behaviour.stall_after is not None and sent >= behaviour.stall_after:
                        plan['stall'] = False
                        server.stopping.wait(behaviour.stall_seconds)
                    if behaviour.pause_after is not None and sent >= behaviour.pause_after:
                        while not (behaviour.gate.is_set() or server.stopping.is_set()):
                            behaviour.gate.wait(0.05)
                    limit = len(remaining)
                    for boundary in (behaviour.drop_after if plan['drop'] else None,
                                     behaviour.stall_after if plan['stall'] else None,
                                     behaviour.pause_after if not behaviour.gate.is_set() else None):
                        if boundary is not None and boundary > sent:
                            limit = min(limit, boundary)
                    piece = remaining[sent:min(sent + SEND_PIECE, limit)]
                    self.wfile.write(piece)
                    sent += len(piece)
                    if behaviour.piece_delay:
                        server.stopping.wait(behaviour.piece_delay)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (e.g. its read timeout fired): nothing more to send.
                self.close_connection = True

        def _send_text(self, status, text):
            payload = text.encode()
            self.send_response(status)
            self.send_header('Content-Type', 'text/plain')
            self.send_header('Content-Length', str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
