"""The swarmlet agent: the asyncio daemon shipped to every server.

This folder is installed (and shipped in the bundle) as the package ``swarmlet_agent``, never as
``agent``: import it as ``swarmlet_agent``. It may import only the standard library, the bundle's
requirements, and ``swarmlet.shipped`` (the layer shipped with it); Python 3.9 compatible.
"""
