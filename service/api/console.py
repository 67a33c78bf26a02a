"""The web console at `/` and the API reference's assets: static files shipped with the package, no CDN."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from litestar import get
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.response import File
from litestar.static_files import create_static_files_router

CONSOLE = Path(str(resources.files("service.console") / "static"))
SWAGGER = Path(str(resources.files("swagger_ui") / "static"))  # swagger-ui-py's copy of Swagger UI's dist
SWAGGER_URL = "/console/swagger"


@get("/", include_in_schema=False, sync_to_thread=False)
def console_page() -> File:
    return File(CONSOLE / "index.html", content_disposition_type="inline", media_type="text/html")


console_assets = create_static_files_router(path="/console/app", directories=[CONSOLE], include_in_schema=False)
swagger_assets = create_static_files_router(path=SWAGGER_URL, directories=[SWAGGER], include_in_schema=False)

docs_renderers = [
    SwaggerRenderPlugin(
        path="/",
        js_url=f"{SWAGGER_URL}/swagger-ui-bundle.js",
        css_url=f"{SWAGGER_URL}/swagger-ui.css",
        standalone_preset_js_url=f"{SWAGGER_URL}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{SWAGGER_URL}/favicon-32x32.png'>",  # not Litestar's CDN
    ),
    JsonRenderPlugin(path="/openapi.json"),
]
