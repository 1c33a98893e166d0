"""Opens N keep-alive connections to a proxy, sends one request on each, reads every answer,
then holds them all open: what each idle client connection costs the proxy in memory (the
caller reads the proxy's VmRSS before and while they are held).

usage: idle_conns.py PORT N BODY_FILE HOLD_SECONDS
Prints "ready OK" once every answer has been read (OK = how many were 200), then holds.
"""
import socket
import sys
import time

port, n, body_file, hold = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
body = open(body_file, "rb").read()
head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head + body)
    conns.append(s)
ok = 0
for s in conns:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    status, _, rest = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in status.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    ok += status.startswith(b"HTTP/1.1 200")
print(f"ready {ok}", flush=True)
time.sleep(hold)
