"""The website: the page to talk to a bot, the operator dashboard, and their static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).parent / "web"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(WEB_DIR / "dashboard.html", headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    """What ``/static`` serves (a mount: routers cannot carry one)."""
    return StaticFiles(directory=WEB_DIR / "static", check_dir=False)
