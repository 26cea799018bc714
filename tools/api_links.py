"""Links from gramlib's docstrings in the API reference (``chapters/api_reference.md``) to what it documents.

A Sphinx extension (``_config.yml``: ``sphinx.local_extensions``). The docstrings cite library objects by
their short path (``gramlib.ntk.empirical_ntk``, as a reader imports them), by a name of their own module
(``twin_readout``) or by a module; the page documents the curated API at its home path
(``gramlib.kernels.ntk.empirical_ntk``). On a Python reference Sphinx cannot resolve, this extension tries
the home path of a short ``gramlib.<module>.<name>`` and then the name in the docstring's own module, and
links to the page's entry when there is one. A reference to what the page does not document (a helper,
a module, a class of JAX) stays literal code, as it reads in the docstring, without a warning; any other
missing reference (outside gramlib and JAX) still warns.
"""

from __future__ import annotations

from sphinx.util.nodes import make_refnode


def _candidates(target, module):
    import gramlib

    parts = target.split(".")
    if parts[0] == "gramlib" and len(parts) >= 2 and parts[1] in gramlib._HOME:
        yield ".".join(["gramlib", gramlib._HOME[parts[1]]] + parts[1:])
    if module and not target.startswith(("gramlib.", "jax.")):
        yield f"{module}.{target}"


def _missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target, module = node["reftarget"], node.get("py:module")
    objects = env.get_domain("py").objects
    for name in _candidates(target, module):
        if name in objects:
            entry = objects[name]
            return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, name)
    if target.startswith(("gramlib.", "jax.")) or (module or "").startswith("gramlib"):
        return contnode
    return None


def setup(app):
    app.connect("missing-reference", _missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
