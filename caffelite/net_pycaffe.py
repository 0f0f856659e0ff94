"""The rest of pycaffe's Net surface: ``_caffe.Net``'s underscore names.

pycaffe builds its friendly ``Net`` (``forward``, ``blobs``, ``inputs``...) on low-level
names of the C++ binding, and user code calls those too: ``net._forward(i, j)``,
``net._bottom_ids(i)``, ``net._inputs``, ``net._batch(...)``. They are thin views of
caffelite's own Net here, so there is one implementation of each.
The layer hooks (``before_forward`` ...) live in Net itself.
"""

from __future__ import annotations

from collections.abc import Iterator


class PycaffeNetMixin:
    """Mixed into Net: pycaffe's low-level names."""

    # ---- _caffe.Net's names -------------------------------------------------------
    def _forward(self, start: int, end: int) -> float:
        """Run layers ``start..end`` by index (Net::ForwardFromTo); the weighted loss."""
        return self.forward_from_to(start, end)

    def _backward(self, start: int, end: int) -> None:
        """Backpropagate from layer ``start`` down to ``end`` by index (BackwardFromTo)."""
        self.backward_from_to(start, end)

    def _bottom_ids(self, layer_id: int) -> list[int]:
        """The blob indices of layer ``layer_id``'s bottoms."""
        return list(self.bottom_ids[layer_id])

    def _top_ids(self, layer_id: int) -> list[int]:
        """The blob indices of layer ``layer_id``'s tops."""
        return list(self.top_ids[layer_id])

    @property
    def _inputs(self) -> list[int]:
        """Blob indices of the net's inputs (``inputs`` gives their names)."""
        return list(self.input_ids)

    @property
    def _outputs(self) -> list[int]:
        """Blob indices of the net's outputs (``outputs`` gives their names)."""
        return list(self.output_ids)

    def _set_input_arrays(self, data, labels) -> None:
        """The binding's MemoryData feed; ``set_input_arrays`` with pycaffe's 4-d labels."""
        self.set_input_arrays(data, labels)

    def _batch(self, blobs: dict) -> Iterator[dict]:
        """pycaffe's batching: dicts of batch-sized slices, the last one zero-padded."""
        for batch, _ in self._batches(blobs):
            yield batch
