"""An independent watcher of Tollgate's WatchEvents over HTTP: reads the
first COUNT messages of a newline-delimited JSON stream (Python's own
http.client, chunked HTTP/1.1) or of a WebSocket (the `websockets` package),
prints each as one line, then disconnects without waiting for the stream to
end, as a client that goes away mid-stream does.

usage: watch_read.py ndjson|ws URL API_KEY COUNT
"""

import asyncio
import http.client
import sys
import urllib.parse


def ndjson(url, key, count):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    path = parts.path + ("?" + parts.query if parts.query else "")
    conn.request("GET", path, headers={"Authorization": "Bearer " + key})
    response = conn.getresponse()
    print("STATUS", response.status, response.getheader("content-type"), flush=True)
    for _ in range(count):
        line = response.readline()
        if not line:
            print("EOF", flush=True)
            break
        print(line.decode().rstrip("\n"), flush=True)
    conn.close()


async def ws(url, key, count):
    import websockets

    headers = {"Authorization": "Bearer " + key}
    try:
        connect = websockets.connect(url, additional_headers=headers, open_timeout=20)
    except TypeError:  # websockets < 14 names it extra_headers
        connect = websockets.connect(url, extra_headers=headers, open_timeout=20)
    async with connect as socket:
        print("STATUS 101 websocket", flush=True)
        for _ in range(count):
            message = await asyncio.wait_for(socket.recv(), 20)
            print(message, flush=True)


def main():
    kind, url, key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if kind == "ndjson":
        ndjson(url, key, count)
    else:
        asyncio.run(ws(url, key, count))


main()
