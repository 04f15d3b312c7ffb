"""HTML checks shared by the page tests: CSP-safe markup and labelled form controls."""
from __future__ import annotations

from html.parser import HTMLParser


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.label_for: set[str] = set()
        self.controls: list[dict[str, str | None]] = []
        self.ids: list[str] = []
        self._label_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "style" in a:
            self.problems.append(f"inline style attribute on <{tag}>")
        for name in a:
            if name.startswith("on"):
                self.problems.append(f"inline event handler {name} on <{tag}>")
        if tag == "script" and not a.get("src"):
            self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("inline <style> block")
        if a.get("id"):
            self.ids.append(a["id"] or "")
        if tag == "label":
            self._label_depth += 1
            if a.get("for"):
                self.label_for.add(a["for"] or "")
        if tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit", "button"):
            self.controls.append({"tag": tag, "id": a.get("id"), "name": a.get("name"),
                                  "aria-label": a.get("aria-label"), "wrapped": "yes" if self._label_depth else None})

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self._label_depth:
            self._label_depth -= 1


def check_page(html: str) -> list[str]:
    """Problems in a page: inline script/style (CSP), unlabelled inputs, duplicate ids."""
    parser = _Collector()
    parser.feed(html)
    problems = list(parser.problems)
    for control in parser.controls:
        if control["aria-label"] or control["wrapped"]:
            continue
        if not control["id"] or control["id"] not in parser.label_for:
            problems.append(f"unlabelled <{control['tag']} name={control['name']!r}>")
    seen: set[str] = set()
    for ident in parser.ids:
        if ident in seen:
            problems.append(f"duplicate id {ident!r}")
        seen.add(ident)
    return problems
