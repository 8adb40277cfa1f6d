"""Sphinx additions for the bonelab book, loaded through ``_config.yml`` (``local_extensions``).

* Each page's scripts are listed once: sphinx-thebe 0.3 and sphinx-togglebutton add their
  configuration scripts twice in a Jupyter Book build (the copies differ only in a filename of
  None or ""), and ``THEBE_JS_URL`` declared twice is a console error on every page.
* ``MathJax.Hub.Queue`` for the widgets: ipywidgets 8's controls typeset their labels with
  MathJax 2's API, which MathJax 3 (the book's) does not have; without this shim every widget
  with a description throws an error.  The shim forwards to MathJax 3's ``typesetPromise``.
* Author-year labels in the reference list (``bibtex_default_style: bonelab``), matching the
  author-year citations in the text; sphinxcontrib-bibtex's styles label entries [BHS+10].
"""

import re

_HUB_SHIM = """(function () {
  var hub = {Queue: function (job) {
    var el = job && job[2], mj = window.MathJax;
    if (el && mj && mj.typesetPromise) mj.typesetPromise([el]).catch(function () {});
  }};
  var cfg = window.MathJax = window.MathJax || {};
  cfg.Hub = hub;
  cfg.startup = cfg.startup || {};
  var ready = cfg.startup.ready;
  cfg.startup.ready = function () {
    if (ready) ready(); else MathJax.startup.defaultReady();
    MathJax.Hub = hub;
  };
})();"""


def _page_scripts(app, pagename, templatename, context, doctree):
    from sphinx.builders.html._assets import _JavaScript

    seen, kept = set(), []
    for js in context.get("script_files", []):
        attrs = getattr(js, "attributes", {})
        key = (getattr(js, "filename", str(js)) or "", tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
        if str(attrs.get("body", "")).startswith("window.MathJax ="):  # right after MathJax's configuration
            kept.append(_JavaScript("", priority=js.priority, body=_HUB_SHIM))
    context["script_files"] = kept


def _author_year_style():
    """pybtex's "plain" formatting with labels "Surname YEAR", "A and B YEAR", "A et al. YEAR"
    (a, b, ... appended where two entries would share a label)."""
    from pybtex.style.formatting.plain import Style as Plain
    from pybtex.style.labels import BaseLabelStyle

    def plain_text(name: str) -> str:
        return re.sub(r"[{}\\]", "", name).strip()

    class AuthorYearLabels(BaseLabelStyle):
        def format_labels(self, sorted_entries):
            labels = [self.label(e) for e in sorted_entries]
            counts = {lab: labels.count(lab) for lab in labels}
            seen: dict = {}
            for lab in labels:
                if counts[lab] > 1:
                    seen[lab] = seen.get(lab, 0) + 1
                    lab = f"{lab}{chr(96 + seen[lab])}"
                yield lab

        @staticmethod
        def label(entry) -> str:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [plain_text(" ".join(p.last_names) or " ".join(p.first_names)) for p in people]
            if not names:
                who = plain_text(entry.fields.get("organization") or entry.fields.get("title", "")).split(":")[0]
            elif len(names) == 1:
                who = names[0]
            elif len(names) == 2:
                who = f"{names[0]} and {names[1]}"
            else:
                who = f"{names[0]} et al."
            return f"{who} {entry.fields.get('year', 'n.d.')}"

    class Style(Plain):
        default_label_style = AuthorYearLabels

    return Style


def setup(app):
    from pybtex.plugin import register_plugin

    register_plugin("pybtex.style.formatting", "bonelab", _author_year_style())
    app.connect("html-page-context", _page_scripts, priority=900)  # after the other extensions
    return {"parallel_read_safe": True, "parallel_write_safe": True}
