"""The Ray backend: engine replicas as a Ray Serve deployment, one engine each (built by
``insieme.engine.factory``), and ``RayEngine``, the ``Engine`` the API layer talks to in front
of them. Ray is imported only when this package is used (``pip install 'insieme[ray]'``)."""

import os

# Read when Ray is imported: Ray's C++ handler for SIGTERM chains to the server's graceful
# shutdown, then leaves this process's Ray half shut, and the next Ray call (deleting the
# replicas) aborts it. The server handles SIGTERM itself.
os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
