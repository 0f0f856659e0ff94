"""Python layers used by the tests (importable because pytest puts tests/ on sys.path)."""

import caffelite as caffe


class ScaleByParam(caffe.Layer):
    """top = factor * bottom, with ``factor`` from param_str; counts its calls."""

    def setup(self, bottom, top):
        self.factor = float(self.param_str or 1.0)
        self.forward_calls = 0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        self.forward_calls += 1
        top[0].data[...] = self.factor * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = self.factor * top[0].diff


class Exploding(caffe.Layer):
    """Raises its own error type from forward, which must reach the caller unchanged."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        raise ZeroDivisionError("user layer failed")


class NotALayer:
    pass


class Sum(caffe.Layer):
    """top = bottom[0] + bottom[1]; both bottoms get the top's gradient."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data + bottom[1].data

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if propagate_down[i]:
                bottom[i].diff[...] = top[0].diff


class SeesArrays(caffe.Layer):
    """top = bottom + 1; records the type of array it was given (GPU-mode tests)."""

    seen: list = []

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        type(self).seen.append(type(bottom[0].data))
        top[0].data[...] = bottom[0].data + 1


class SeesDeviceArrays(SeesArrays):
    """The same, declaring that it computes on device arrays (``self.xp``)."""

    device_arrays = True
