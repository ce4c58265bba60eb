"""Go ``text/template``-compatible interpolation (docs/engine.md, "Templates"), compiled once, data-only.

    t = compile_template("Hello {{ .name }}")
    t.render({"name": "Ada"})  # "Hello Ada"
"""

from trellis.templates.template import Template, compile_template

__all__ = ["Template", "compile_template"]
