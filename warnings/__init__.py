"""Population warnings (installed as ``atalaia.warnings``).

DESIGN.md puts this package at ``warnings/`` in the repository root, the name of a standard-library
module. When the root is on ``sys.path`` (``python -m pip``, ``python -m pytest`` run from the
checkout) a plain ``import warnings`` would find this folder; it then loads the standard library's
``warnings`` in its place, so nothing outside Atalaia ever sees this package under that name.
"""

if __name__ == "warnings":  # pragma: no cover - only when the checkout root shadows the stdlib
    import importlib.util as _util
    import os as _os
    import sys as _sys
    import sysconfig as _sysconfig

    _spec = _util.spec_from_file_location(
        "warnings", _os.path.join(_sysconfig.get_paths()["stdlib"], "warnings.py")
    )
    _stdlib = _util.module_from_spec(_spec)
    _sys.modules["warnings"] = _stdlib
    _spec.loader.exec_module(_stdlib)
    globals().update({k: v for k, v in _stdlib.__dict__.items() if k not in ("__name__", "__spec__")})
