"""What people write (descriptions, comments) as HTML: Markdown by markdown-it-py, then
sanitized by nh3 (ammonia), so whatever the parser lets through, no script, event handler,
style or `javascript:` link reaches a page."""

import functools

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

PARSER = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
SCHEMES = {"http", "https", "mailto"}


@functools.lru_cache(maxsize=1024)  # an issue's page is read far more often than written
def render(text: str) -> Markup:
    """Safe HTML of the Markdown text: sanitized, so the one `Markup` made of user text."""
    html = nh3.clean(
        PARSER.render(text), url_schemes=SCHEMES, link_rel="noopener noreferrer nofollow"
    )
    return Markup(html)  # nh3's output
