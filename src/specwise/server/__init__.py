"""OpenAI-compatible HTTP server over the engine loop (``specwise serve``)."""
