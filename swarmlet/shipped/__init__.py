"""The shipped layer: the part of swarmlet that runs on servers, next to the agent.

Everything in this package (and nothing else of ``swarmlet`` but its
``__init__``) goes into the agent bundle: ``provision/bundle.py`` ships this
folder as it is. So every module here:

- runs on Python 3.9, imports the standard library, its siblings in this
  package, and only the bundle's requirements (aiohttp, msgpack, docker,
  cryptography, httptools) — never click, asyncssh, PyYAML or an admin-side
  ``swarmlet`` module;
- is shared by the master, the CLI and the agent (``swarmlet_agent``, from
  ``agent/``), so a change here is a change of the wire between them.

What is here:

- ``exceptions``: the one error tree (``SwarmletError``);
- ``models``: frozen specs and observed status, and the validating wire codec;
- ``tlsutil``: mutual-TLS contexts and peer roles;
- ``rfc3339``: Docker's timestamps;
- ``routes``: the routing table (pure); ``ingress``: a load balancer per published port;
- ``discovery``: service VIPs and their TCP forwarders;
- ``lb/``: the HTTP reverse proxy; ``gossip/``: SWIM + Lifeguard membership.
"""
