"""rdevos web app: segment a video in the browser (Gradio), on top of rdevos's public API.

Not part of the ``rdevos`` library: it ships in the same wheel and needs the ``web`` extra
(``pip install 'rdevos[web]'``). Start it with ``rdevos serve``. :mod:`rdevos_web.jobs` (work folder, uploads,
background jobs) does not import Gradio.
"""

from __future__ import annotations

from rdevos_web.server import ServeOptions, serve

__all__ = ["serve", "ServeOptions"]
