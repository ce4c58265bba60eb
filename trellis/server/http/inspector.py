"""The web inspector (``inspector: true``): a static page on the HTTP listener that
draws the flow, lists and watches sessions and walks one (docs/inspector.md).

Only files are served here. The page calls the public services over Connect like
any other HTTP caller (same routes, token, errors and limits), so it can do nothing
curl cannot. The files are a fixed list read from the package once, at start:
no path from a request ever reaches the file system.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from aiohttp import web

PREFIX: Final = "/inspector/"

# URL name -> (file under static/, content type)
FILES: Final = {
    "": ("index.html", "text/html; charset=utf-8"),
    "inspector.js": ("inspector.js", "text/javascript; charset=utf-8"),
    "inspector.css": ("inspector.css", "text/css; charset=utf-8"),
    "mermaid.js": ("vendor/mermaid.tiny.js", "text/javascript; charset=utf-8"),
}

# The page loads nothing from elsewhere and calls only its own origin. Mermaid writes
# <style> elements into the SVGs it draws, hence the inline styles; no inline scripts.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page is small and changes with the installed trellis: always revalidated.
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("trellis.server.http").joinpath("static", *name.split("/")).read_bytes()


def routes() -> list[web.RouteDef]:
    """The inspector's GET routes: ``/`` and ``/inspector`` lead to ``/inspector/``."""
    bodies = {url: (_read(name), content_type) for url, (name, content_type) in FILES.items()}

    async def file(request: web.Request) -> web.Response:
        found = bodies.get(request.match_info.get("name", ""))
        if found is None:
            raise web.HTTPNotFound(text="no such file in the inspector\n")
        body, content_type = found
        return web.Response(body=body, headers={"Content-Type": content_type, **SECURITY_HEADERS})

    async def to_page(request: web.Request) -> web.Response:
        # Relative (from "/" and from "/inspector" alike), so that the page still works
        # behind a proxy that adds a path prefix.
        raise web.HTTPFound("inspector/")

    return [
        web.get("/", to_page),
        web.get("/inspector", to_page),
        web.get(PREFIX, file),
        web.get(PREFIX + "{name}", file),
    ]
