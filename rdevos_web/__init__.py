"""rdevos web app: segment a video in the browser (Gradio), on top of rdevos's public API.

Not part of the ``rdevos`` library: it ships in the same wheel and needs the ``web`` extra
(``pip install 'rdevos[web]'``). Start it with ``rdevos serve``. Without Gradio: :mod:`rdevos_web.store` (the job
record, the single source of truth of what the page shows), :mod:`rdevos_web.uploads` (work folder, uploads),
:mod:`rdevos_web.runner` (background runs), :mod:`rdevos_web.exports` (downloads), :mod:`rdevos_web.prompting`
(box and click prompts) and :mod:`rdevos_web.views` (what the page shows of a job); :mod:`rdevos_web.app` is the
Gradio page.
"""

from __future__ import annotations

from rdevos_web.server import ServeOptions, serve

__all__ = ["serve", "ServeOptions"]
