"""The HTTP view of sessions, agents, requests and stats (SPEC §9): an ASGI application
(``SessionsApp``) and the uvicorn glue ``tracker serve`` uses."""

from tracker.web.app import SessionsApp

__all__ = ["SessionsApp"]
