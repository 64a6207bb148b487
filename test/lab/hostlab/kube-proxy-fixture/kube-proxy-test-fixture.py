#!/usr/bin/env python3
# ===========================================================================================
#  kpm-lab kube-proxy server -- A TEST FIXTURE, NOT KUBE-PROXY.
#
#  Started by kube-proxy-fixture.sh inside a lab host once that host passed the checks a real
#  kube-proxy makes for its mode.  It proxies nothing: it only answers the HTTP endpoints a
#  tool uses to ask a running kube-proxy what it is doing, the way kube-proxy 1.26+ answers:
#
#    metricsBindAddress  GET /proxyMode -> the mode ("ipvs", "iptables", "nftables"), text/plain
#                        GET /healthz   -> 200 "ok"
#    healthzBindAddress  GET /healthz, /livez -> 200 {"lastUpdated": ...,"currentTime": ..., "nodeEligible": true}
#
#  Anything else is a 404 "404 page not found", as from Go's default mux.  It writes its PID
#  to --pid-file only once both listeners are bound, and exits when it cannot bind one.
# ===========================================================================================
import argparse
import datetime
import http.server
import os
import socket
import socketserver
import sys
import threading


def split_host_port(value: str, default_port: int):
    """kube-proxy's "host:port" (port optional, IPv6 in brackets); "" host means every address."""
    if value.startswith('['):
        host, _, rest = value[1:].partition(']')
        port = rest[1:] if rest.startswith(':') else ''
    elif value.count(':') == 1:
        host, _, port = value.partition(':')
    elif ':' in value:
        host, port = value, ''
    else:
        host, port = value, ''
    return host, int(port) if port else default_port


def go_time(t: datetime.datetime) -> str:
    """Go's time.Time.String() for a UTC time: "2026-09-30 09:40:02.118 +0000 UTC"."""
    frac = f'{t.microsecond:06d}'.rstrip('0')
    return t.strftime('%Y-%m-%d %H:%M:%S') + (f'.{frac}' if frac else '') + ' +0000 UTC'


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    routes: dict = {}

    def send_response(self, code, message=None):
        # Go's net/http sends no Server header.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header('Date', self.date_time_string())

    def reply(self, code: int, body: str, ctype: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    def do_GET(self):
        route = self.routes.get(self.path.split('?', 1)[0])
        if route is None:
            self.reply(404, '404 page not found\n', 'text/plain; charset=utf-8')
        else:
            self.reply(200, *route())

    do_HEAD = do_GET

    def log_message(self, format, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # HTTPServer's own server_bind does a reverse DNS lookup, which a lab host cannot answer.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


def serve(bind: str, default_port: int, routes: dict) -> Server:
    host, port = split_host_port(bind, default_port)
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    handler = type('RouteHandler', (Handler,), {'routes': routes})
    server_class = type('FamilyServer', (Server,), {'address_family': family})
    try:
        server = server_class((host or ('::' if family == socket.AF_INET6 else '0.0.0.0'), port), handler)
    except OSError as e:
        print(f'kpm-lab kube-proxy test fixture: cannot listen on {bind}: {e.strerror}', file=sys.stderr, flush=True)
        sys.exit(1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    p = argparse.ArgumentParser(description='kpm-lab kube-proxy TEST FIXTURE (not kube-proxy)')
    p.add_argument('--mode', required=True)
    p.add_argument('--metrics-bind-address', required=True)
    p.add_argument('--healthz-bind-address', required=True)
    p.add_argument('--pid-file', required=True)
    a = p.parse_args()

    def healthz():
        now = go_time(datetime.datetime.now(datetime.timezone.utc))
        return f'{{"lastUpdated": "{now}","currentTime": "{now}", "nodeEligible": true}}', 'application/json'

    serve(a.metrics_bind_address, 10249, {
        '/proxyMode': lambda: (a.mode, 'text/plain; charset=utf-8'),
        '/healthz': lambda: ('ok', 'text/plain; charset=utf-8'),
    })
    serve(a.healthz_bind_address, 10256, {'/healthz': healthz, '/livez': healthz})
    with open(a.pid_file + '.tmp', 'w') as f:
        f.write(f'{os.getpid()}\n')
    os.rename(a.pid_file + '.tmp', a.pid_file)
    threading.Event().wait()


if __name__ == '__main__':
    main()
