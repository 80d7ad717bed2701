"""The HTTP side: orders and commands in by HTTP on the MQTT path, signed webhooks out, the read API, health
and metrics (`app`), run on its own thread and event loop (`server`). See docs/http.md."""
