#!/usr/bin/env python3
"""Writes the small broken models focusd's tests load to check its fallback:
unsupported_op.onnx uses an operator no runtime knows; wrong_input.onnx takes a vector, not
an image. usage: test_models.py OUTDIR"""
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save


def model(nodes, inputs, outputs, inits=(), opsets=(("", 13),)):
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
                          producer_name="focusd daemon/models/test_models.py")
    m.ir_version = 8
    return m


def main(out):
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 64, 64])
    save(model([helper.make_node("FancyUpsample", ["image"], ["y"], domain="com.example")],
               [image], [y], opsets=(("", 13), ("com.example", 1))),
         f"{out}/unsupported_op.onnx")
    vec = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])
    out_vec = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.ones((16, 4), np.float32), "w")
    save(model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vec], [out_vec], [w]),
         f"{out}/wrong_input.onnx")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
