"""The master's web dashboard: ``overview`` (the live picture, shared with ``swarmlet top``),
``server`` (its own TLS listener, token or client-certificate auth, SSE), ``static/`` (the page)."""
