"""Make the GX Data Docs site work offline. Its pages load jQuery, Bootstrap and bootstrap-table from
public CDNs, and without them the index shows no tables (nothing behind a firewall, nothing on this
machine). The same files are published on the npm registry: they are fetched once (cached next to the
site) and the pages are rewritten to load them from `static/vendor/`. When the registry cannot be
reached the CDN links are kept, and the site still works wherever the CDNs do."""

from __future__ import annotations

import logging
import os
import re
import tarfile
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

REGISTRY = os.environ.get("CDP_NPM_REGISTRY", "https://registry.npmjs.org")
# CDN address -> (npm package, version, file inside the package tarball)
ASSETS: dict[str, tuple[str, str, str]] = {
    "https://code.jquery.com/jquery-3.7.1.min.js": ("jquery", "3.7.1", "dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": ("popper.js", "1.12.9", "dist/umd/popper.min.js"),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": ("bootstrap", "4.3.1", "dist/js/bootstrap.min.js"),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": ("bootstrap", "4.3.1", "dist/css/bootstrap.min.css"),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        ("bootstrap-datepicker", "1.9.0", "dist/js/bootstrap-datepicker.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        ("bootstrap-datepicker", "1.9.0", "dist/css/bootstrap-datepicker.min.css"),
    # the pass/fail icons; the stylesheet loads its fonts from ../webfonts/
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": ("@fortawesome/fontawesome-free", "6.6.0", "css/all.min.css"),
}
# Folders a file needs next to it (relative to the package root).
COMPANIONS = {"@fortawesome/fontawesome-free": ("webfonts/",)}
# unpkg / jsdelivr addresses name the package, version and file themselves.
_NPM_CDN = re.compile(r"https://(?:unpkg\.com|cdn\.jsdelivr\.net/npm)/((?:@[\w.-]+/)?[\w.-]+)@([\w.-]+)/([\w./-]+)")
_URL = re.compile(r"""(?:src|href)="(https://[^"]+)\"""")


def _resolve(url: str) -> tuple[str, str, str] | None:
    if url in ASSETS:
        return ASSETS[url]
    m = _NPM_CDN.fullmatch(url)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def _fetch(package: str, version: str, cache: Path) -> Path | None:
    """The package tarball from the npm registry, cached; None when it cannot be had."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{package.replace('/', '__')}-{version}.tgz"
    if target.exists():
        return target
    name = package.rsplit("/", 1)[-1]
    url = f"{REGISTRY}/{package}/-/{name}-{version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (a fixed https registry)
            target.write_bytes(response.read())
    except OSError as e:
        log.warning("Data Docs: cannot fetch %s (%s); pages keep their CDN link", url, e)
        return None
    return target


def _extract(tarball: Path, inner: str) -> bytes | None:
    with tarfile.open(tarball) as tar:
        try:
            member = tar.getmember(f"package/{inner}")
        except KeyError:
            return None
        return tar.extractfile(member).read()


def _extract_folder(tarball: Path, folder: str, dest: Path) -> None:
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("package/")
            if member.isfile() and name.startswith(folder):
                out = dest / name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(member).read())


def localise(site: Path, cache: Path, since: float | None = None) -> int:
    """Rewrite every page of the site (or those written from `since`, a time.time(): a build's own pages;
    the others were rewritten by earlier builds) to load its CDN assets from `static/vendor/`; return how
    many distinct assets were made local."""
    pages = [p for p in site.rglob("*.html") if since is None or p.stat().st_mtime >= since]
    urls = {u for page in pages for u in _URL.findall(page.read_text(encoding="utf-8"))}
    local: dict[str, Path] = {}
    for url in sorted(urls):
        spec = _resolve(url)
        if spec is None:
            continue
        package, version, inner = spec
        dest = site / "static" / "vendor" / package.replace("/", "__") / version / inner
        if not dest.exists():
            tarball = _fetch(package, version, cache)
            data = _extract(tarball, inner) if tarball else None
            if data is None:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            for folder in COMPANIONS.get(package, ()):
                _extract_folder(tarball, folder, site / "static" / "vendor" / package.replace("/", "__") / version)
        local[url] = dest
    for page in pages:
        text = page.read_text(encoding="utf-8")
        new = text
        for url, dest in local.items():
            new = new.replace(f'"{url}"', f'"{os.path.relpath(dest, page.parent)}"')
        if new != text:
            page.write_text(new, encoding="utf-8")
    return len(local)
