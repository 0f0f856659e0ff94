"""A pycaffe program as users write them: it knows only ``caffe``, never caffelite.

Run by tests/test_as_caffe.py under ``python -m caffelite.as_caffe``. It builds a net
with caffe.net_spec, draws it with caffe.draw, preprocesses an image with caffe.io's
Transformer, saves weights in caffe_pb2's format and classifies with them, printing
``key=value`` lines the test checks.
"""

import os
import sys
import tempfile

import caffe
import caffe.draw
import caffe.net_spec
import caffe.pycaffe
import numpy as np
from caffe import layers as L
from caffe import params as P
from caffe.io import Transformer
from caffe.proto import caffe_pb2


def deploy_net() -> caffe_pb2.NetParameter:
    n = caffe.net_spec.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, weight_filler=dict(type="xavier"))
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip = L.InnerProduct(n.pool, num_output=5, weight_filler=dict(type="xavier"))
    n.prob = L.Softmax(n.ip)
    return n.to_proto()


def main() -> None:
    workdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    proto = deploy_net()
    model = os.path.join(workdir, "deploy.prototxt")
    with open(model, "w") as f:
        f.write(str(proto))
    caffe.set_mode_cpu()
    caffe.set_random_seed(3)
    net = caffe.pycaffe.Net(model, caffe.TEST)
    weights = os.path.join(workdir, "deploy.caffemodel")
    net.save(weights)
    saved = caffe_pb2.NetParameter()
    with open(weights, "rb") as f:
        saved.ParseFromString(f.read())
    print("saved_layers=" + ",".join(layer.name for layer in saved.layer if layer.blobs))

    transformer = Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_raw_scale("data", 255)
    image = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    net.blobs["data"].data[...] = transformer.preprocess("data", image)
    prob = net.forward()["prob"]
    print(f"prob_sum={prob.sum():.5f}")

    classifier = caffe.Classifier(model, weights, raw_scale=255)
    center = classifier.predict([image], oversample=False)
    print(f"classifier_matches_net={np.allclose(center, prob, atol=1e-6)}")

    drawing = os.path.join(workdir, "deploy.dot")
    caffe.draw.draw_net_to_file(proto, drawing, "TB")
    with open(drawing) as f:
        print(f"drawn_blobs={f.read().count('octagon')}")
    print(f"caffe_module={caffe.__name__} io_module={caffe.io.__name__}")


if __name__ == "__main__":
    main()
