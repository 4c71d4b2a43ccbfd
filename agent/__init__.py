"""The swarmlet agent: the asyncio daemon shipped to every server (import name ``swarmlet_agent``)."""
