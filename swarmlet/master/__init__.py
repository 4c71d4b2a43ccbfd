"""The master: desired state, placement, reconcile, and the API the CLI talks to.

Pure core: ``constraints`` (placement expressions), ``scheduler`` (nodes +
specs + tasks -> plan), ``reconcile`` (desired vs observed + now -> changes).
Thin shells: ``store`` (SQLite WAL), ``agents`` (client for the agent API),
``api`` (aiohttp HTTPS mTLS server), ``daemon`` (the loops), ``client`` (the
CLI's side of the master API), ``cluster`` (the admin host files).
"""
