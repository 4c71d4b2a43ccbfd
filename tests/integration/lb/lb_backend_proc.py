"""A tiny keep-alive HTTP/1.1 backend run as a separate process, so a test can
SIGKILL it under load (an in-process server cannot crash like a replica).

Usage: python lb_backend_proc.py NAME [hang]  → prints its port, answers NAME to any GET.
Like ``examples/hello`` (the demo replica), the head and the body go out in two
writes, so a kill can land between them. With ``hang``, ``GET /hang`` sends a
head promising a body, prints ``head`` on stdout and never sends the body: the
test kills the process there, mid-answer.
Standard library only, so it starts in a few tens of milliseconds.
"""

import asyncio
import sys


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    body = sys.argv[1].encode()
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            await writer.drain()
            if head.startswith(b"GET /hang ") and sys.argv[2:] == ["hang"]:
                print("head", flush=True)
                await asyncio.Event().wait()     # until killed
            writer.write(body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
