"""A few accessibility rules checked on a page's HTML (the rules a screen-reader user would
notice first), with the standard library's parser."""

from __future__ import annotations

from html.parser import HTMLParser

_NOT_LABELLED = {"hidden", "submit", "button", "reset"}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lang: str | None = None
        self.headings: list[int] = []
        self.controls: list[tuple[str, dict[str, str]]] = []
        self.label_for: set[str] = set()
        self.th_without_scope = 0
        self.svgs_exposed = 0
        self.buttons: list[str] = []
        self._in_button = False
        self._button_text = ""
        self._in_label = 0
        self.wrapped: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.lang = a.get("lang")
        elif len(tag) == 2 and tag[0] == "h" and tag[1].isdigit():
            self.headings.append(int(tag[1]))
        elif tag == "label":
            self._in_label += 1
            if "for" in a:
                self.label_for.add(a["for"])
        elif tag in ("input", "select", "textarea"):
            if tag != "input" or a.get("type", "text") not in _NOT_LABELLED:
                self.controls.append((tag, a))
                if self._in_label:
                    self.wrapped.append(a.get("id", ""))
        elif tag == "th" and "scope" not in a:
            self.th_without_scope += 1
        elif tag == "svg" and a.get("aria-hidden") != "true" and "role" not in a:
            self.svgs_exposed += 1
        elif tag == "button":
            self._in_button, self._button_text = True, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._in_label -= 1
        elif tag == "button":
            self._in_button = False
            self.buttons.append(self._button_text.strip())

    def handle_data(self, data: str) -> None:
        if self._in_button:
            self._button_text += data


def accessibility_problems(html: str) -> list[str]:
    page = _Collector()
    page.feed(html)
    problems = []
    if not page.lang:
        problems.append("<html> has no lang")
    if page.headings.count(1) != 1:
        problems.append(f"{page.headings.count(1)} <h1> (one expected)")
    previous = 1
    for level in page.headings:
        if level > previous + 1:
            problems.append(f"heading h{level} follows h{previous}")
        previous = level
    for tag, attrs in page.controls:
        labelled = (
            attrs.get("id") in page.label_for
            or attrs.get("id", "") in page.wrapped
            or "aria-label" in attrs
            or "aria-labelledby" in attrs
        )
        if not labelled:
            problems.append(f"<{tag} name={attrs.get('name')!r}> has no label")
    if page.th_without_scope:
        problems.append(f"{page.th_without_scope} <th> without scope")
    if page.svgs_exposed:
        problems.append(f"{page.svgs_exposed} <svg> neither hidden nor given a role")
    problems += [f"a button without text: {b!r}" for b in page.buttons if not b]
    return problems
