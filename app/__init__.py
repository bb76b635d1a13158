"""eventcast: a WebSocket event gateway with ordered fan-out, resume and drain."""

__version__ = "0.1.0"
