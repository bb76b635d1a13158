"""Transports: each only moves bytes for a Session (app/session.py).

- http.py       the public port's HTTP front: request-head limits, the handshake deadline, sockets not yet
                subscribers counted; subscriber upgrades handed on already parsed
- native_ws.py  WebSocket straight from the socket (what ``eventcast serve`` runs)
- asgi_ws.py    WebSocket through ASGI (any ASGI server; permessage-deflate)
- sse.py        Server-Sent Events through ASGI
- pump.py       the send loop of the two ASGI transports, behind the same synchronous write

How each transport says a refusal (HTTP status or close code) is the table in app/causes.py.
"""
