"""The client-to-server half of permessage-deflate on the native transport.

The server-to-client half needs nothing per connection: events are compressed once each, without context
takeover (``Framing.WS_*_DEFLATE``, app/protocol.py), and the same bytes go to every client that agreed to
it (app/handshake.py). What a client sends is inflated by websockets' ``PerMessageDeflate`` with its limits
(a message may not inflate past ``max_control_bytes``: 1009). Its zlib state is made only when a compressed
message arrives, and dropped after each one when the client agreed to ``client_no_context_takeover``, so an
idle subscriber keeps none.
"""

from __future__ import annotations

import zlib
from typing import Any

from websockets.extensions.permessage_deflate import PerMessageDeflate

from app.handshake import Deflate


class Inflate(PerMessageDeflate):
    """``PerMessageDeflate`` whose inflate state is made on first use (websockets makes it at once)."""

    def __init__(self, agreed: Deflate) -> None:
        # Not super().__init__(), which allocates the inflate state (~7 KB) for every connection.
        self.remote_no_context_takeover = agreed.client_no_context_takeover
        self.local_no_context_takeover = True  # we never compress through this object
        self.remote_max_window_bits = agreed.client_max_window_bits
        self.local_max_window_bits = 15
        self.compress_settings: dict[Any, Any] = {}
        self.decode_cont_data = False
        self._decoder: Any = None

    @property
    def decoder(self) -> Any:
        if self._decoder is None:
            self._decoder = zlib.decompressobj(wbits=-self.remote_max_window_bits)
        return self._decoder

    @decoder.setter
    def decoder(self, value: Any) -> None:
        self._decoder = value

    @decoder.deleter
    def decoder(self) -> None:
        self._decoder = None
