# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""A griffe extension for the API reference: reST markup in docstrings as Markdown.

The docstrings follow the Google style with reST inline markup, as Optax's do
(``:func:`marthe```, ```Title <url>`_``), which ``help()`` shows as is. For the
site, roles become inline code and reST links become Markdown links; the
double-backtick literals are already valid Markdown.
"""

import re

import griffe

_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):`~?([^`]+)`")
_LINK = re.compile(r"`([^`<]+?)\s*<(https?://[^>]+)>`_{1,2}")


def markdown(text: str) -> str:
  """``text`` with reST roles as inline code and reST links as Markdown links."""
  return _LINK.sub(r"[\1](\2)", _ROLE.sub(r"`\1`", text))


class RestRoles(griffe.Extension):
  """Rewrites every docstring with :func:`markdown`."""

  def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
    del kwargs
    if obj.docstring is not None:
      obj.docstring.value = markdown(obj.docstring.value)
