"""The HTTP layer: routes, wire schemas, SSE. Talks to the engine only via ``Engine``."""
