"""A fake feed server on loopback for tests and the demo: serves the real CoinDesk RSS 2.0 feed
(``data/rss/coindesk.xml``) and the variations the tests derive from it, with the HTTP a real
feed host speaks (ETag / Last-Modified and 304, status codes, Retry-After, slow answers).

``FakeFeeds.set(path, body)`` publishes a feed body; ``fail(path, status, times, retry_after)``
answers errors; ``delay(path, seconds)`` makes it slow. The module-level functions derive feeds
from the real one: ``with_new_items`` (new stories over time), ``mirrored`` (a second source
carrying the same stories under its own guids), ``as_atom``, ``truncated`` (broken XML),
``without_links_and_guids``.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

COINDESK = Path(__file__).resolve().parent.parent / "data" / "rss" / "coindesk.xml"
_ITEM = re.compile(r"<item>.*?</item>", re.S)


def coindesk() -> str:
    return COINDESK.read_text(encoding="utf-8")


def items(xml: str) -> list[str]:
    return _ITEM.findall(xml)


def with_new_items(xml: str, n: int, *, start: int = 0) -> str:
    """The feed with ``n`` new items first (as a feed shows its newest first), derived from its
    first item: new title, link and guid, a later date."""
    first = items(xml)[0]
    new = []
    for k in range(start, start + n):
        it = re.sub(
            r"<title>.*?</title>",
            f"<title><![CDATA[Fresh story {k}: XRP and bitcoin move]]></title>",
            first,
            flags=re.S,
        )
        it = re.sub(r"<link>(.*?)</link>", rf"<link>\1-update-{k}</link>", it, flags=re.S)
        it = re.sub(r"<guid([^>]*)>(.*?)</guid>", rf"<guid\1>\2-{k}</guid>", it, flags=re.S)
        it = re.sub(r"<pubDate>.*?</pubDate>", f"<pubDate>{formatdate(1_790_000_000 + 60 * k)}</pubDate>", it)
        new.append(it)
    at = xml.index("<item>")
    return xml[:at] + "\n".join(new) + "\n" + xml[at:]


def archived(xml: str, path: str, pages: int, per_page: int = 3, step_s: int = 6 * 3600) -> dict[str, str]:
    """The feed and ``pages - 1`` older archive pages (RFC 5005): page 1 is the feed itself with
    an ``atom:link rel="next"`` to ``{path}?page=2``, and so on; the older pages carry stories
    derived from the real items (new title, link and guid), each ``step_s`` older than the one
    before, starting below the feed's oldest item. Returns path -> body, for ``FakeFeeds.set``."""
    real = items(xml)
    dates = [re.search(r"<pubDate>(.*?)</pubDate>", it, re.S) for it in real]
    oldest = min(email.utils.parsedate_to_datetime(m.group(1)).timestamp() for m in dates if m)

    def page_url(k: int) -> str:
        return f"{path}?page={k}"

    def with_next(body: str, k: int) -> str:
        if k >= pages:
            return body
        link = f'<atom:link rel="next" href="{escape(page_url(k + 1))}"/>'
        return body.replace("<item>", link + "<item>", 1)

    out = {path: with_next(xml, 1)}
    head, tail = xml[: xml.index("<item>")], xml[xml.rindex("</item>") + len("</item>") :]
    n = 0
    for k in range(2, pages + 1):
        page = []
        for _ in range(per_page):
            n += 1
            it = real[n % len(real)]
            title = f"<title><![CDATA[Archived story {n}: markets a while ago]]></title>"
            it = re.sub(r"<title>.*?</title>", title, it, flags=re.S)
            it = re.sub(r"<link>(.*?)</link>", rf"<link>\1-archive-{n}</link>", it, flags=re.S)
            it = re.sub(r"<guid([^>]*)>(.*?)</guid>", rf"<guid\1>\2-archive-{n}</guid>", it, flags=re.S)
            it = re.sub(
                r"<pubDate>.*?</pubDate>", f"<pubDate>{formatdate(oldest - step_s * n)}</pubDate>", it
            )
            page.append(it)
        out[page_url(k)] = with_next(head + "\n".join(page) + tail, k)
    return out


def mirrored(xml: str, name: str = "Mirror") -> str:
    """Another source carrying the same stories: its own channel title and guids, same links and titles."""
    out = re.sub(
        r"<channel>\s*<title>.*?</title>", f"<channel><title>{escape(name)}</title>", xml, count=1, flags=re.S
    )
    return re.sub(r"<guid([^>]*)>(.*?)</guid>", rf"<guid\1>{name.lower()}-\2</guid>", out, flags=re.S)


def as_atom(xml: str) -> str:
    """The same stories as an Atom 1.0 feed."""
    entries = []
    for it in items(xml):

        def pick(tag: str, text: str = it) -> str:
            m = re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", text, re.S)
            v = m.group(1) if m else ""
            return re.sub(r"<!\[CDATA\[(.*?)\]\]>", r"\1", v, flags=re.S).strip()

        when = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.strptime(pick("pubDate")[:25], "%a, %d %b %Y %H:%M:%S")
        )
        entries.append(
            f'<entry><title>{escape(pick("title"))}</title><link href="{escape(pick("link"))}"/>'
            f"<id>urn:uuid:{escape(pick('guid'))}</id><updated>{when}</updated>"
            f"<summary>{escape(pick('description'))}</summary></entry>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<title>CoinDesk (Atom)</title><id>urn:coindesk</id><updated>2026-09-25T16:22:09Z</updated>"
        + "".join(entries)
        + "</feed>"
    )


def truncated(xml: str) -> str:
    """Broken XML: cut inside the first item."""
    return xml[: xml.index("<item>") + 40]


def without_links_and_guids(xml: str) -> str:
    """The first item loses its link and guid (it cannot be deduplicated)."""
    first = items(xml)[0]
    bad = re.sub(r"<link>.*?</link>", "", first, flags=re.S)
    bad = re.sub(r"<guid[^>]*>.*?</guid>", "", bad, flags=re.S)
    return xml.replace(first, bad, 1)


@dataclass
class _Route:
    body: bytes = b""
    content_type: str = "application/rss+xml; charset=utf-8"
    modified: str = field(default_factory=lambda: formatdate(usegmt=True))
    fail_status: int | None = None
    fail_times: int = 0
    retry_after: str | None = None
    delay_s: float = 0.0
    hits: int = 0
    conditional_hits: int = 0

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


class FakeFeeds:
    def __init__(self) -> None:
        self.routes: dict[str, _Route] = {}
        self.lock = threading.Lock()
        feeds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                with feeds.lock:
                    route = feeds.routes.get(self.path)
                    if route is not None:
                        route.hits += 1
                        failing = route.fail_times > 0
                        if failing:
                            route.fail_times -= 1
                if route is None:
                    self.send_error(404, "no such feed")
                    return
                if route.delay_s:
                    time.sleep(route.delay_s)
                if failing:
                    self.send_response(route.fail_status or 500)
                    if route.retry_after:
                        self.send_header("Retry-After", route.retry_after)
                    self.send_header("Content-Type", "text/html")
                    self.end_headers()
                    self.wfile.write(b"<html><body><h1>Service Unavailable</h1></body></html>")
                    return
                if (
                    self.headers.get("If-None-Match") == route.etag
                    or self.headers.get("If-Modified-Since") == route.modified
                ):
                    with feeds.lock:
                        route.conditional_hits += 1
                    self.send_response(304)
                    self.send_header("ETag", route.etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", route.content_type)
                self.send_header("ETag", route.etag)
                self.send_header("Last-Modified", route.modified)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-feeds", daemon=True)

    def start(self) -> FakeFeeds:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeFeeds:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def set(
        self, path: str, body: str | bytes, content_type: str = "application/rss+xml; charset=utf-8"
    ) -> str:
        data = body.encode() if isinstance(body, str) else body
        with self.lock:
            r = self.routes.setdefault(path, _Route())
            if data != r.body:
                r.modified = formatdate(time.time() + r.hits, usegmt=True)  # a new version has a new date
            r.body, r.content_type = data, content_type
        return self.url(path)

    def fail(self, path: str, status: int, times: int = 1, retry_after: str | None = None) -> None:
        with self.lock:
            r = self.routes.setdefault(path, _Route())
            r.fail_status, r.fail_times, r.retry_after = status, times, retry_after

    def delay(self, path: str, seconds: float) -> None:
        with self.lock:
            self.routes.setdefault(path, _Route()).delay_s = seconds

    def hits(self, path: str) -> tuple[int, int]:
        """(requests, answered 304)."""
        r = self.routes[path]
        return r.hits, r.conditional_hits
