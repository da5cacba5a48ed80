"""Sphinx glue for the rcnn_lab book (loaded through ``sphinx.local_extensions`` in _config.yml).

- Serves ``book/_static`` (the book's CSS and its MathJax 3 shim for the widget manager).
- Shows the repository and launch buttons only when ``repository.url`` is set in _config.yml
  (the one place the address is written; empty or absent: no buttons), and exposes it to the
  pages as the ``repository`` tag (``{only} repository``) and the ``{{ repository_link }}``
  substitution.
- Keeps "R-CNN" whole in the sidebar title (a non-breaking hyphen).
- Drops the inline scripts that Sphinx 7 emits twice (an extension's ``add_js_file(None,
  body=...)`` called after the builder started is listed once as ``None`` and once as ``""``:
  sphinx-thebe's ``const THEBE_JS_URL`` then fails with "already been declared").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

STATIC = Path(__file__).resolve().parents[1] / "_static"


def _jupyter_book_default_url() -> str:
    """The address jupyter-book fills in when _config.yml gives none (its own repository)."""
    try:
        import jupyter_book

        defaults = Path(jupyter_book.__file__).with_name("default_config.yml").read_text()
        return yaml.safe_load(defaults)["repository"]["url"].strip().rstrip("/")
    except (ImportError, OSError, KeyError, TypeError, AttributeError):
        return ""


def _repository_buttons(app, config) -> None:
    """Show the repository and launch buttons only when the repository address is configured.

    jupyter-book refuses ``use_repository_button`` without an address, so it is set here. Pages
    read the address as the ``{{ repository_link }}`` substitution inside ``{only} repository``.
    """
    options = config.html_theme_options
    url = (options.get("repository_url") or "").strip().rstrip("/")
    link = ""
    if url and url != _jupyter_book_default_url():
        options["use_repository_button"] = True
        app.tags.add("repository")
        link = f"[{url.split('://', 1)[-1]}]({url})"
    else:
        options["use_repository_button"] = False
        options["launch_buttons"] = {}
        options.pop("repository_url", None)
    config.myst_substitutions = {**config.myst_substitutions, "repository_link": link}


def _static_files(app) -> None:
    """Serve book/_static (rcnn_lab.css, rcnn_lab.js) next to the theme's static files."""
    app.config.html_static_path.append(str(STATIC))


def _dedupe_inline_scripts(app, pagename, templatename, context: dict[str, Any], doctree) -> None:
    """List every inline script (a ``body`` without a file) once per page."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[str] = set()
    unique = []
    for script in scripts:
        body = getattr(script, "attributes", {}).get("body") if not script.filename else None
        if body is not None:
            if body in seen:
                continue
            seen.add(body)
        unique.append(script)
    scripts[:] = unique


def _unbreakable_title(app, pagename, templatename, context: dict[str, Any], doctree) -> None:
    """Keep "R-CNN" whole in the sidebar title: a non-breaking hyphen (U+2011) in the title.

    A line may break after any hyphen-minus, whatever the CSS ``hyphens`` value, and with some
    fonts the title used to wrap as "Faster R-" / "CNN".
    """
    title = context.get("docstitle")
    if isinstance(title, str):
        context["docstitle"] = re.sub(r"(?<=\w)-(?=\w)", "\u2011", title)


def setup(app) -> dict[str, Any]:
    app.connect("config-inited", _repository_buttons)
    app.connect("builder-inited", _static_files)
    app.add_css_file("rcnn_lab.css")
    # deferred, after MathJax's own deferred script: MathJax 3 is loaded when it runs
    app.add_js_file("rcnn_lab.js", defer="defer", priority=900)
    app.connect("html-page-context", _dedupe_inline_scripts, priority=900)
    app.connect("html-page-context", _unbreakable_title)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
