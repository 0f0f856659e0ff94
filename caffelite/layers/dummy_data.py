"""DummyData: tops of fixed shapes filled by fillers, for tests and benchmarks.

A constant filler is applied once, at setup; any other filler draws fresh values
on every forward (Caffe's ``refill_`` rule), so a constant top costs nothing per
iteration and a random top looks like new data each batch.
"""

from __future__ import annotations

from caffelite.fillers import fill
from caffelite.layer import Layer, register_layer
from caffelite.proto import caffe_pb2


@register_layer("DummyData")
class DummyDataLayer(Layer):
    exact_num_bottom_blobs = 0
    min_top_blobs = 1

    def setup(self, bottom, top) -> None:
        param = self.layer_param.dummy_data_param
        num_top = len(top)
        fillers = list(param.data_filler)
        if len(fillers) not in (0, 1, num_top):
            raise self.error(
                f"needs 0, 1 or one data_filler per top ({num_top} tops); "
                f"got {len(fillers)} data_filler entries"
            )
        if not fillers:
            fillers = [caffe_pb2.FillerParameter(type="constant", value=0)]
        self._fillers = fillers
        self._refill = [f.type != "constant" for f in fillers]
        for i, blob in enumerate(top):
            blob.reshape(self._top_shape(param, i, num_top))
        # constant tops are filled here, once; the others on every forward
        for i, blob in enumerate(top):
            k = self._filler_index(i)
            if not self._refill[k]:
                fill(blob, self._fillers[k])

    def _top_shape(self, param, i: int, num_top: int) -> tuple[int, ...]:
        legacy = {
            name: list(getattr(param, name)) for name in ("num", "channels", "height", "width")
        }
        if any(legacy.values()):
            if len(param.shape):
                raise self.error(
                    "give either shape or the legacy num/channels/height/width, not both"
                )
            dims = []
            for name, values in legacy.items():
                if len(values) not in (1, num_top):
                    raise self.error(
                        f"needs '{name}' once or once per top ({num_top} tops); "
                        f"got {len(values)} values"
                    )
                dims.append(values[0] if len(values) == 1 else values[i])
            return tuple(dims)
        if len(param.shape) not in (1, num_top):
            raise self.error(
                f"needs 'shape' once or once per top ({num_top} tops); "
                f"got {len(param.shape)} shapes"
            )
        return tuple(param.shape[0 if len(param.shape) == 1 else i].dim)

    def _filler_index(self, top_index: int) -> int:
        return top_index if len(self._fillers) > 1 else 0

    def reshape(self, bottom, top) -> None:
        """The shapes were fixed in setup, as in Caffe."""

    def forward(self, bottom, top) -> None:
        for i, blob in enumerate(top):
            k = self._filler_index(i)
            if self._refill[k]:
                fill(blob, self._fillers[k])
