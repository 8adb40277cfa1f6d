"""Sphinx additions for the bonelab book, loaded through ``_config.yml`` (``local_extensions``).

* Each page's scripts are listed once: sphinx-thebe 0.3 and sphinx-togglebutton add their
  configuration scripts twice in a Jupyter Book build (the copies differ only in a filename of
  None or ""), and ``THEBE_JS_URL`` declared twice is a console error on every page.
* ``MathJax.Hub.Queue`` for the widgets: ipywidgets 8's controls typeset their labels with
  MathJax 2's API, which MathJax 3 (the book's) does not have; without this shim every widget
  with a description throws an error.  The shim forwards to MathJax 3's ``typesetPromise``.
* Author-year labels in the reference list (``bibtex_default_style: bonelab``), matching the
  author-year citations in the text; sphinxcontrib-bibtex's styles label entries [BHS+10].
* Links from the chapters to the API reference: in each page's prose, the first inline-code
  mention of a documented bonelab name (```viz.slice_viewer```, ```bonelab.results.record```,
  ```Renderer```) becomes a link to its entry in ``book/api``.  A chapter's author writes the
  name as code, as readers will type it; the link follows from the docstrings, and cannot go
  stale when a function moves (a mention that no longer names a documented object stays text).
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


# Pages that show what the chapters recorded in this build (bonelab.results): Sphinx re-reads
# only the pages whose source changed, so these are marked outdated at every build, and their
# notebooks ask myst-nb to execute them every time (metadata mystnb.execution_mode = force).
# Sphinx reads documents in sorted order, so they run after the chapters (book/0*) they read.
RECORD_READERS = ("book/intro", "book/results")


def _reread_record_readers(app, env, added, changed, removed):
    return [doc for doc in RECORD_READERS if doc in env.found_docs and doc not in added | changed]


_MENTION = re.compile(r"^(?:bonelab\.)?([A-Za-z_][\w.]*?)(?:\(.*\))?$")


def _api_targets(env) -> dict:
    """Mention -> (docname, anchor) of a documented bonelab object: its full name, and each
    dotted suffix of it that names no other object (``viz.overlay``); a bare name
    (``Renderer``) only for a module-level function or class."""
    entries = {name: e for name, e in env.get_domain("py").objects.items() if name.startswith("bonelab.")}
    by_suffix: dict = {}
    for name, entry in entries.items():
        parts = name.split(".")
        for k in range(1, len(parts)):
            suffix = ".".join(parts[k:])
            if "." in suffix or entry.objtype in ("function", "class", "exception"):
                by_suffix.setdefault(suffix, set()).add(name)
    targets = {suffix: names.pop() for suffix, names in by_suffix.items() if len(names) == 1}
    targets.update({name[len("bonelab."):]: name for name in entries})
    return {mention: (entries[name].docname, entries[name].node_id) for mention, name in targets.items()}


def _link_api_mentions(app, doctree, docname):
    """First mention per page of each documented name, as inline code in prose -> a link."""
    from docutils import nodes

    if app.builder.format != "html" or docname.endswith("api"):
        return
    if getattr(app, "_bonelab_api_targets", None) is None:  # all documents are read by now
        app._bonelab_api_targets = _api_targets(app.env)
    targets = app._bonelab_api_targets
    linked = set()
    for literal in list(doctree.findall(nodes.literal)):
        if isinstance(literal.parent, nodes.reference) or any(
                "cell_output" in a.get("classes", ()) for a in _ancestors(literal)):
            continue
        match = _MENTION.match(literal.astext().strip())
        target = targets.get(match.group(1)) if match else None
        if not target or target in linked:
            continue
        linked.add(target)
        uri = app.builder.get_relative_uri(docname, target[0]) + "#" + target[1]
        ref = nodes.reference("", "", internal=True, refuri=uri, classes=["api-link"],
                              reftitle=f"API reference: {match.group(1)}")
        literal.replace_self(ref)
        ref.append(literal)


def _ancestors(node):
    while node.parent is not None:
        node = node.parent
        yield node


def setup(app):
    from pybtex.plugin import register_plugin

    app.connect("doctree-resolved", _link_api_mentions)
    app.connect("env-get-outdated", _reread_record_readers)
    register_plugin("pybtex.style.formatting", "bonelab", _author_year_style())
    app.connect("html-page-context", _page_scripts, priority=900)  # after the other extensions
    return {"parallel_read_safe": True, "parallel_write_safe": True}
