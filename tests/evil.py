"""Files whose pickle runs code when loaded the unsafe way (torch.load(weights_only=False) or pickle):
each writes a marker file. No loader of this project may ever create the marker."""
from __future__ import annotations

import io
import pickle
from pathlib import Path


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling calls exec(...): the marker appears if the pickle is run
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def torch_zip(marker: Path) -> bytes:
    """A torch.save archive (zip) holding a checkpoint-shaped dict with the payload inside."""
    import torch

    buffer = io.BytesIO()
    torch.save({"config": {"name": "toyroll-ddpm"}, "model": {"w": torch.zeros(2)}, "x": _Payload(marker)}, buffer)
    return buffer.getvalue()


def legacy_pickle(marker: Path) -> bytes:
    """A plain pickle (torch.load's legacy format) of the payload."""
    return pickle.dumps({"config": {}, "model": _Payload(marker)}, protocol=2)


FORMATS = {"torch-zip": torch_zip, "legacy-pickle": legacy_pickle}
