"""The web side: the pages people look at, served by the HTTP listener (`gateway.http`).

`pages` has the routes (the shop terminal, the customer's tracking page, the static files), `live`
the fan-out of committed changes to open pages (Server-Sent Events), `session` the terminal's login
cookie. What a page shows is decided by the pure `gateway.core.board` and `gateway.core.tracking`;
`static/` holds the pages' own JS and CSS and the vendored Leaflet, `templates/` their HTML.
"""
