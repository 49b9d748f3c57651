"""The Ray backend: engine replicas as a Ray Serve deployment, one engine each (built by
``insieme.engine.factory``), and ``RayEngine``, the ``Engine`` the API layer talks to in front
of them. Ray is imported only when this package is used (``pip install 'insieme[ray]'``)."""
