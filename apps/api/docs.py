"""/docs (Swagger UI) and /redoc served offline from assets pinned in a Python package.

Why: FastAPI's default pages load Swagger UI and ReDoc from a public CDN at a floating major
version, so they are blank in a cluster without internet and change under our feet. The
`fastapi-offline` wheel (pinned in requirements_lock.txt) ships swagger-ui-bundle.js,
swagger-ui.css, redoc.standalone.js and a favicon; they are served from its package
directory under `ASSETS` (GET and HEAD, as StaticFiles does).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
ASSET_PACKAGE = "fastapi_offline"


def asset_directory() -> str:
    """The package directory holding the pinned Swagger UI and ReDoc files."""
    return str(files(ASSET_PACKAGE).joinpath("static"))


def install_docs(app: FastAPI) -> None:
    """Add /docs, /redoc and their assets to `app` (created with docs_url=redoc_url=None)."""
    title = app.title

    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
        )

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js", redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    app.add_route("/docs", swagger, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route("/redoc", redoc, methods=["GET", "HEAD"], include_in_schema=False)
    # follow_symlink: under `bazel run`/`bazel test` the package files are symlinks into the cache
    app.mount(ASSETS, StaticFiles(directory=asset_directory(), follow_symlink=True), name="docs-assets")
