"""The plumbing shared by the models/*/make_deploy.py scripts, which describe their nets
with caffelite's NetSpec (as Caffe's examples do with pycaffe's) and write the prototxt.

Importing this module makes ``import caffelite`` work from a checkout that was not
installed, so ``python models/<net>/make_deploy.py`` runs as it is.
"""

from __future__ import annotations

import os
import sys

try:
    import caffelite  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from google.protobuf import text_format  # noqa: E402


def prototxt_text(net_param, header: str) -> str:
    """``header`` (comment lines), then the NetParameter in protobuf text format."""
    return header + text_format.MessageToString(net_param)


def write_prototxt(path: str, net_param, header: str) -> None:
    with open(path, "w") as f:
        f.write(prototxt_text(net_param, header))
    print(f"wrote {path}")


def write_deploy(script: str, net_param, header: str) -> int:
    """Write deploy.prototxt beside ``script`` (a make_deploy.py's ``__file__``)."""
    write_prototxt(
        os.path.join(os.path.dirname(os.path.abspath(script)), "deploy.prototxt"),
        net_param,
        header,
    )
    return 0
