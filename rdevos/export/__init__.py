"""Export to ONNX / TorchScript and run exported models.

``export_model`` / ``export_onnx`` / ``export_torchscript`` write the per-frame graphs and a ``manifest.json``;
:class:`OnnxEngine` runs an ONNX export with onnxruntime and numpy only (``pip install 'rdevos[export]'``);
:class:`TorchScriptEngine` runs a TorchScript export. ``export_prompt_model`` exports the prompt-to-mask model;
:class:`OnnxPromptPredictor` / :class:`TorchScriptPromptPredictor` run it. The exporters (which need torch) are
imported on first use.
"""

from __future__ import annotations

from typing import Any

from rdevos.export.runtime import (MANIFEST_NAME, ExportCheckError, ExportedEngine, ExportedPromptPredictor,
                                   MissingDependencyError, OnnxEngine, OnnxPromptPredictor, load_manifest,
                                   validate_manifest)

__all__ = ["OnnxEngine", "TorchScriptEngine", "ExportedEngine", "OnnxPromptPredictor", "TorchScriptPromptPredictor",
           "ExportedPromptPredictor", "MissingDependencyError", "ExportCheckError", "export_model", "export_onnx",
           "export_torchscript", "export_prompt_model", "load_manifest", "validate_manifest", "EXPORT_FORMATS",
           "MANIFEST_NAME"]

_LAZY = {"export_model": "rdevos.export.graphs", "EXPORT_FORMATS": "rdevos.export.graphs",
         "export_onnx": "rdevos.export.onnx", "export_torchscript": "rdevos.export.torchscript",
         "TorchScriptEngine": "rdevos.export.torchscript", "TorchScriptPromptPredictor": "rdevos.export.torchscript",
         "export_prompt_model": "rdevos.export.prompt"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rdevos.export' has no attribute {name!r}")
