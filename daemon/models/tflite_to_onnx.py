#!/usr/bin/env python3
"""Converts a MediaPipe-style fp16 TFLite detector to ONNX for tract-onnx.

tract-tflite cannot run these models as shipped: their weights are fp16 constants behind
DEQUANTIZE, many of them sparse behind DENSIFY, and they use DEPTH_TO_SPACE. This converter
evaluates DENSIFY and DEQUANTIZE of constants here, once, and writes a plain NCHW ONNX graph.
Weights stay fp16 in the file (a Cast makes them f32; tract folds it at load). Only the ops
the MediaPipe detectors use are supported; anything else stops the conversion by name.

usage: tflite_to_onnx.py MODEL.tflite OUT.onnx [--yolo-head]
  --yolo-head  also decodes anchors and keypoints in the graph and ends in one YOLOv8-style
               output [1, 5, N] (cx, cy, w, h in input pixels, then the person score), and
               takes 0..1 pixels as YOLO exports do: a YOLO-layout model we export ourselves,
               to test focusd's YOLO decoding on a real detector.
"""
import sys

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

OPS = {v: k for k, v in tflite.BuiltinOperator.__dict__.items() if not k.startswith("_")}
ACT = {0: None, 1: "Relu", 3: "Relu6"}
DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 9: np.int8}


def densify(values, shape, sp):
    """Expands a TFLite sparse tensor (CSR levels, optional blocks) to dense."""
    order = sp.TraversalOrderAsNumpy().tolist()
    block_map = sp.BlockMapAsNumpy().tolist() if sp.BlockMapLength() else []
    rank = len(shape)
    meta = [sp.DimMetadata(i) for i in range(sp.DimMetadataLength())]
    block = {d: meta[rank + k].DenseSize() for k, d in enumerate(block_map)}
    seg_types = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}

    def arrays(m):
        def vec(kind, table):
            v = seg_types[kind]()
            v.Init(table.Bytes, table.Pos)
            return v.ValuesAsNumpy().astype(np.int64)
        return vec(m.ArraySegmentsType(), m.ArraySegments()), vec(m.ArrayIndicesType(), m.ArrayIndices())

    levels = []
    for level in order:
        m = meta[level]
        levels.append(("dense", m.DenseSize()) if m.Format() == 0 else ("csr", *arrays(m)))
    out = np.zeros(shape, values.dtype)
    idx = [0] * len(order)
    pos = [0]

    def walk(level, prev):
        if level == len(order):
            dense = [idx[d] * block.get(d, 1) for d in range(rank)]
            for k, d in enumerate(block_map):
                dense[d] += idx[rank + k]
            out[tuple(dense)] = values[pos[0]]
            pos[0] += 1
            return
        kind = levels[level]
        if kind[0] == "dense":
            for j in range(kind[1]):
                idx[order[level]] = j
                walk(level + 1, prev * kind[1] + j)
        else:
            seg, ind = kind[1], kind[2]
            for k in range(seg[prev], seg[prev + 1]):
                idx[order[level]] = int(ind[k])
                walk(level + 1, k)

    walk(0, 0)
    assert pos[0] == len(values), "sparse data not fully consumed"
    return out


class Converter:
    def __init__(self, path):
        self.buf = open(path, "rb").read()
        self.model = tflite.Model.GetRootAsModel(self.buf, 0)
        self.g = self.model.Subgraphs(0)
        self.codes = []
        for i in range(self.model.OperatorCodesLength()):
            oc = self.model.OperatorCodes(i)
            self.codes.append(OPS[max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())])
        self.consts = {}  # tensor index -> numpy array (folded constants)
        self.nodes, self.inits, self.names = [], [], {}
        # Rank-4 tensors are NCHW here, NHWC in the TFLite model; a Reshape's output keeps
        # TFLite's order (SSD box predictors reshape to [1, N, 1, 4]): these names.
        self.plain = set()

    def tensor(self, i):
        return self.g.Tensors(i)

    def const(self, i):
        if i in self.consts:
            return self.consts[i]
        t = self.tensor(i)
        data = self.model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int) or len(data) == 0:
            return None
        arr = np.frombuffer(data.tobytes(), DTYPES[t.Type()])
        shape = t.ShapeAsNumpy().tolist() if t.ShapeLength() else []
        if t.Sparsity() is not None:
            return densify(arr, shape, t.Sparsity())
        return arr.reshape(shape)

    def name(self, i):
        return self.names.get(i) or self.tensor(i).Name().decode()

    def init(self, name, arr, raw=False):
        """A constant; f32 weights are stored fp16 and cast back at load."""
        if not raw and arr.dtype in (np.float16, np.float32):
            self.inits.append(numpy_helper.from_array(arr.astype(np.float16), name + "_f16"))
            self.nodes.append(helper.make_node("Cast", [name + "_f16"], [name], to=TensorProto.FLOAT))
        else:
            self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def fused(self, node, out, fused):
        """Appends `node` (writing `out`) and the fused activation after it."""
        if fused not in ACT:
            raise SystemExit(f"unsupported fused activation {fused}")
        if ACT[fused] is None:
            self.nodes.append(node)
            return
        node.output[0] = out + "_pre"
        self.nodes.append(node)
        if ACT[fused] == "Relu":
            self.nodes.append(helper.make_node("Relu", [out + "_pre"], [out]))
        else:
            lo = self.init(out + "_lo", np.array(0, np.float32), raw=True)
            hi = self.init(out + "_hi", np.array(6, np.float32), raw=True)
            self.nodes.append(helper.make_node("Clip", [out + "_pre", lo, hi], [out]))

    def convert(self, yolo_head=False):
        g = self.g
        (inp,) = g.InputsAsNumpy().tolist()
        n, h, w, c = self.tensor(inp).ShapeAsNumpy().tolist()
        self.names[inp] = "image"
        for k in range(g.OperatorsLength()):
            op = g.Operators(k)
            code = self.codes[op.OpcodeIndex()]
            ins, outs = op.InputsAsNumpy().tolist(), op.OutputsAsNumpy().tolist()
            out = self.name(outs[0])
            if code in ("DEQUANTIZE", "DENSIFY"):
                value = self.const(ins[0])
                if value is None:
                    raise SystemExit(f"{code} of a non-constant tensor is not supported")
                self.consts[outs[0]] = value.astype(np.float32) if code == "DEQUANTIZE" else value
                continue
            getattr(self, "op_" + code.lower(), self.unsupported(code))(op, ins, out)
        outputs = [self.name(o) for o in g.OutputsAsNumpy().tolist()]
        out_info = []
        for o, name in zip(g.OutputsAsNumpy().tolist(), outputs):
            out_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, self.tensor(o).ShapeAsNumpy().tolist()))
        if yolo_head:
            out_info = [self.yolo_head(outputs, h)]
            # YOLO exports take 0..1 pixels; the pose weights want -1..1.
            self.init("two", np.array(2, np.float32), raw=True)
            self.init("one", np.array(1, np.float32), raw=True)
            self.nodes[:0] = [helper.make_node("Mul", ["pixels", "two"], ["pixels2"]),
                              helper.make_node("Sub", ["pixels2", "one"], ["image"])]
        graph = helper.make_graph(
            self.nodes, "detector",
            [helper.make_tensor_value_info("pixels" if yolo_head else "image", TensorProto.FLOAT, [n, c, h, w])],
            out_info, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                  producer_name="focusd daemon/models/tflite_to_onnx.py")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model

    def unsupported(self, code):
        def fail(*_):
            raise SystemExit(f"unsupported TFLite operator {code}")
        return fail

    def weight(self, i):
        value = self.const(i)
        if value is None:
            raise SystemExit(f"tensor {self.name(i)} must be constant")
        return value

    def conv(self, op, ins, out, depthwise):
        opts_t = tflite.DepthwiseConv2DOptions() if depthwise else tflite.Conv2DOptions()
        opts_t.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        wgt = self.weight(ins[1])  # OHWI, or 1HWC for depthwise
        if depthwise:
            wgt = wgt.transpose(3, 0, 1, 2)  # C,1,H,W
        else:
            wgt = wgt.transpose(0, 3, 1, 2)  # O,I,H,W
        if self.name(ins[0]) in self.plain:
            raise SystemExit(f"convolution {out} of a reshaped tensor is not supported")
        kh, kw = wgt.shape[2], wgt.shape[3]
        stride = [opts_t.StrideH(), opts_t.StrideW()]
        if opts_t.Padding() == tflite.Padding.SAME:
            pad = "SAME_UPPER"
        else:
            pad = "VALID"
        wname = self.init(out + "_w", wgt)
        args = [self.name(ins[0]), wname]
        if len(ins) > 2 and ins[2] >= 0:
            args.append(self.init(out + "_b", self.weight(ins[2])))
        attrs = dict(kernel_shape=[kh, kw], strides=stride, auto_pad=pad)
        if depthwise:
            attrs["group"] = wgt.shape[0]
        self.fused(helper.make_node("Conv", args, [out], **attrs), out, opts_t.FusedActivationFunction())

    def op_conv_2d(self, op, ins, out):
        self.conv(op, ins, out, False)

    def op_depthwise_conv_2d(self, op, ins, out):
        self.conv(op, ins, out, True)

    def op_add(self, op, ins, out):
        opts = tflite.AddOptions()
        opts.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        node = helper.make_node("Add", [self.name(ins[0]), self.name(ins[1])], [out])
        self.fused(node, out, opts.FusedActivationFunction())

    def op_pad(self, op, ins, out):
        p = self.weight(ins[1]).astype(np.int64)  # [4, 2] in NHWC
        nchw = p[[0, 3, 1, 2]]
        pads = self.init(out + "_pads", np.concatenate([nchw[:, 0], nchw[:, 1]]), raw=True)
        self.nodes.append(helper.make_node("Pad", [self.name(ins[0]), pads], [out]))

    def op_depth_to_space(self, op, ins, out):
        opts = tflite.DepthToSpaceOptions()
        opts.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        self.nodes.append(helper.make_node("DepthToSpace", [self.name(ins[0])], [out],
                                           blocksize=opts.BlockSize(), mode="DCR"))

    def op_resize_bilinear(self, op, ins, out):
        opts = tflite.ResizeBilinearOptions()
        opts.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        size = self.weight(ins[1]).astype(np.int64)
        shape = self.tensor(ins[0]).ShapeAsNumpy().tolist()
        sizes = self.init(out + "_sizes", np.array([shape[0], shape[3], *size], np.int64))
        mode = ("align_corners" if opts.AlignCorners() else
                "half_pixel" if opts.HalfPixelCenters() else "asymmetric")
        self.nodes.append(helper.make_node("Resize", [self.name(ins[0]), "", "", sizes], [out],
                                           mode="linear", coordinate_transformation_mode=mode))

    def op_reshape(self, op, ins, out):
        # Reshape flattens in NHWC order: go back to NHWC first.
        src = self.name(ins[0])
        if len(self.tensor(ins[0]).ShapeAsNumpy()) == 4 and src not in self.plain:
            self.nodes.append(helper.make_node("Transpose", [src], [out + "_nhwc"], perm=[0, 2, 3, 1]))
            src = out + "_nhwc"
        target = self.tensor(op.OutputsAsNumpy()[0]).ShapeAsNumpy().tolist()
        shape = self.init(out + "_shape", np.array(target, np.int64))
        self.nodes.append(helper.make_node("Reshape", [src, shape], [out]))
        self.plain.add(out)

    def op_concatenation(self, op, ins, out):
        opts = tflite.ConcatenationOptions()
        opts.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        axis = opts.Axis()
        rank = len(self.tensor(ins[0]).ShapeAsNumpy())
        names = [self.name(i) for i in ins]
        plain = [n in self.plain for n in names]
        if rank == 4 and any(plain) != all(plain):
            raise SystemExit(f"concatenation {out} mixes NCHW and reshaped tensors")
        if rank == 4 and all(plain):
            self.plain.add(out)
        elif rank == 4:
            axis = [0, 2, 3, 1][axis % 4]
        node = helper.make_node("Concat", names, [out], axis=axis)
        self.fused(node, out, opts.FusedActivationFunction())

    def yolo_head(self, outputs, size):
        """[1,N,12] regressors + [1,N,1] logits -> [1,5,N]: person box around the hips."""
        from anchors import pose_anchors
        a = pose_anchors(size) * size  # anchor centres in input pixels, [N, 2]
        reg, logit = outputs
        self.init("anchor_xy", a[None].astype(np.float32), raw=True)
        mk = self.nodes.append
        for name, lo in (("hip", 4), ("top", 6)):
            self.inits.append(numpy_helper.from_array(np.array([lo], np.int64), name + "_lo"))
            self.inits.append(numpy_helper.from_array(np.array([lo + 2], np.int64), name + "_hi"))
            self.inits.append(numpy_helper.from_array(np.array([2], np.int64), name + "_axis"))
            mk(helper.make_node("Slice", [reg, name + "_lo", name + "_hi", name + "_axis"], [name + "_rel"]))
            mk(helper.make_node("Add", [name + "_rel", "anchor_xy"], [name]))
        mk(helper.make_node("Sub", ["top", "hip"], ["span"]))
        mk(helper.make_node("Mul", ["span", "span"], ["span2"]))
        self.inits.append(numpy_helper.from_array(np.array([2], np.int64), "sum_axes"))
        mk(helper.make_node("ReduceSum", ["span2", "sum_axes"], ["dist2"], keepdims=1))
        mk(helper.make_node("Sqrt", ["dist2"], ["dist"]))
        # The person box of anchors.py's person_box(): from 0.9 d above the hips to d below,
        # 0.7 d wide, d being the hip-to-top distance.
        self.inits.append(numpy_helper.from_array(np.array([0.7, 1.9], np.float32), "wh_scale"))
        self.inits.append(numpy_helper.from_array(np.array([0.0, 0.05], np.float32), "c_shift"))
        mk(helper.make_node("Mul", ["dist", "wh_scale"], ["wh"]))
        mk(helper.make_node("Mul", ["dist", "c_shift"], ["shift"]))
        mk(helper.make_node("Add", ["hip", "shift"], ["centre"]))
        mk(helper.make_node("Sigmoid", [logit], ["score"]))
        mk(helper.make_node("Concat", ["centre", "wh", "score"], ["boxes_nc"], axis=2))
        mk(helper.make_node("Transpose", ["boxes_nc"], ["output0"], perm=[0, 2, 1]))
        return helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, len(a)])


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        raise SystemExit(__doc__)
    model = Converter(args[0]).convert(yolo_head="--yolo-head" in sys.argv)
    onnx.save(model, args[1])
