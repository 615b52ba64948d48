"""The dashboard: a local web app the daemon serves (`obdsync run` with [web] enabled).

`server` holds the aiohttp application and its security (loopback by default, a login
token from elsewhere, CSRF on actions), `pages` the HTML of each screen, `charts` the
server-side SVG charts, `live` the hub that pushes new samples to open pages (SSE), and
`API.md` the versioned JSON API the pages use.
"""
