"""/view of a small file: answered from memory, with the status, headers and bytes aiohttp's FileResponse
(what ComfyUI's /view answers with) sends, without its two thread hops (stat and open, then close).

A range, a condition, a compressed sibling the client accepts, a large file or one that cannot be opened
are left to FileResponse itself (`small_file` answers None).
"""

from __future__ import annotations

import os

from aiohttp import web
from aiohttp.web_fileresponse import CONTENT_TYPES

SMALL_FILE = 1 << 20
_CONDITIONS = ("Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")
_COMPRESSED = ((".br", "br"), (".gz", "gzip"))  # siblings FileResponse would send instead


async def small_file(request: web.Request, path: str, headers: dict[str, str]) -> web.StreamResponse | None:
    """The answer to a GET of the file at `path`, sent; None when FileResponse must answer."""
    if request.method != "GET" or any(h in request.headers for h in _CONDITIONS):
        return None
    accepted = request.headers.get("Accept-Encoding", "").lower()
    if any(encoding in accepted and os.path.isfile(path + suffix) for suffix, encoding in _COMPRESSED):
        return None
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > SMALL_FILE:
                return None
            data = f.read()
    except OSError:  # FileResponse has an answer for each (403, 404)
        return None
    response = web.StreamResponse(headers=headers)
    guess = getattr(CONTENT_TYPES, "guess_file_type", CONTENT_TYPES.guess_type)  # FileResponse's, by Python version
    response.content_type = guess(path)[0] or "application/octet-stream"
    response.etag = f"{st.st_mtime_ns:x}-{st.st_size:x}"
    response.last_modified = st.st_mtime
    response.content_length = len(data)
    response.headers["Accept-Ranges"] = "bytes"
    await response.prepare(request)
    await response.write(data)
    await response.write_eof()
    return response
