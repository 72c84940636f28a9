#!/usr/bin/env python3
"""Convert MediaPipe's BlazePose .tflite models to ONNX for ONNX Runtime.

Why our own converter: tf2onnx needs all of tensorflow-cpu and still chokes on
the detector's sparse (DENSIFY) weights; tflite2onnx fails on both models.
The two BlazePose graphs use a dozen builtin ops, so a direct, checked mapping
is small and needs only `tflite` (flatbuffer bindings), `onnx` and `numpy`.

What it does:
  * folds constant DEQUANTIZE (fp16 -> fp32) and DENSIFY (TFLite sparse
    tensor format, decoded as TFLite's FormatConverter does) into fp32
    initializers;
  * keeps the model input in NHWC (the caller fills pixels row by row) and
    runs every 4-D activation in ONNX's NCHW layout, transposing weights once;
  * keeps only the ops that feed the requested outputs (e.g. the landmark
    model's segmentation head is dropped), and transposes 4-D outputs back
    to NHWC so the output shapes equal TFLite's.

Usage: tflite2onnx.py IN.tflite OUT.onnx [--outputs Identity,Identity_1]
"""

import argparse
import sys

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions

OP_NAMES = {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_")}
NP_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
PADDING_SAME, PADDING_VALID = 0, 1
ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6 = 0, 1, 2, 3
# NHWC axis -> NCHW axis
NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def fail(msg):
    sys.exit(f"tflite2onnx: {msg}")


def opts(op, cls):
    table = op.BuiltinOptions()
    o = cls()
    o.Init(table.Bytes, table.Pos)
    return o


def sparse_index_vector(kind, table):
    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(kind)
    if cls is None:
        fail(f"unsupported sparse index vector type {kind}")
    v = cls()
    v.Init(table.Bytes, table.Pos)
    return [int(x) for x in v.ValuesAsNumpy()]


def densify(tensor, values):
    """Decode a TFLite sparse tensor (same algorithm as TFLite's
    sparsity FormatConverter::SparseToDense)."""
    sp = tensor.Sparsity()
    shape = [int(d) for d in tensor.ShapeAsNumpy()]
    traversal = [int(x) for x in sp.TraversalOrderAsNumpy()]
    block_map = [int(x) for x in sp.BlockMapAsNumpy()] if sp.BlockMapLength() else []
    rank = len(shape)
    levels = []
    for i in range(sp.DimMetadataLength()):
        dm = sp.DimMetadata(i)
        if dm.Format() == 0:  # DENSE
            levels.append(("dense", dm.DenseSize(), None, None))
        else:  # SPARSE_CSR
            seg = sparse_index_vector(dm.ArraySegmentsType(), dm.ArraySegments())
            idx = sparse_index_vector(dm.ArrayIndicesType(), dm.ArrayIndices())
            levels.append(("csr", None, seg, idx))
    block_size = [levels[rank + i][1] for i in range(len(block_map))]
    dense = np.zeros(int(np.prod(shape)), dtype=values.dtype)
    strides = [int(np.prod(shape[i + 1:])) for i in range(rank)]
    src = iter(values.tolist())
    indices = [0] * len(levels)

    def emit():
        orig = [0] * rank
        for i in range(rank):
            orig[traversal[i]] = indices[i]
        for i in range(rank, len(indices)):
            b = traversal[i] - rank
            d = block_map[b]
            orig[d] = orig[d] * block_size[b] + indices[i]
        dense[sum(o * s for o, s in zip(orig, strides))] = next(src)

    def populate(level, prev):
        if level == len(levels):
            emit()
            return
        kind, size, seg, idx = levels[level]
        if kind == "dense":
            for i in range(size):
                indices[level] = i
                populate(level + 1, prev * size + i)
        else:
            for i in range(seg[prev], seg[prev + 1]):
                indices[level] = idx[i]
                populate(level + 1, i)

    populate(0, 0)
    return dense.reshape(shape)


class Converter:
    def __init__(self, buf, wanted_outputs):
        self.model = tflite.Model.GetRootAsModel(buf, 0)
        if self.model.SubgraphsLength() != 1:
            fail("expected one subgraph")
        self.g = self.model.Subgraphs(0)
        self.consts = {}  # tensor index -> numpy array (TFLite layout)
        self.nodes = []
        self.inits = []
        self.counter = 0
        self.wanted = wanted_outputs

    # ---- helpers -------------------------------------------------------
    def tensor(self, i):
        return self.g.Tensors(i)

    def shape(self, i):
        return [int(d) for d in self.tensor(i).ShapeAsNumpy()]

    def tname(self, i):
        return f"t{i}"

    def fresh(self, base):
        self.counter += 1
        return f"{base}_{self.counter}"

    def buffer_array(self, i):
        t = self.tensor(i)
        buf = self.model.Buffers(t.Buffer())
        if buf is None or buf.DataLength() == 0:
            return None
        dtype = NP_TYPES.get(t.Type())
        if dtype is None:
            fail(f"tensor {t.Name()} has unsupported type {t.Type()}")
        raw = buf.DataAsNumpy().tobytes()
        arr = np.frombuffer(raw, dtype=dtype).copy()
        if t.Sparsity() is None:
            arr = arr.reshape(self.shape(i))
        return arr

    def const(self, i):
        if i in self.consts:
            return self.consts[i]
        arr = self.buffer_array(i)
        if arr is not None and self.tensor(i).Sparsity() is None:
            self.consts[i] = arr
            return arr
        return None

    def init(self, arr, base):
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op_type, inputs, outputs, **attrs):
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self.fresh(op_type), **attrs))

    def activation(self, act, pre, out):
        if act == ACT_NONE:
            self.node("Identity", [pre], [out])
        elif act == ACT_RELU:
            self.node("Relu", [pre], [out])
        elif act == ACT_RELU6:
            lo = self.init(np.array(0, np.float32), "lo")
            hi = self.init(np.array(6, np.float32), "hi")
            self.node("Clip", [pre, lo, hi], [out])
        elif act == ACT_RELU_N1_TO_1:
            lo = self.init(np.array(-1, np.float32), "lo")
            hi = self.init(np.array(1, np.float32), "hi")
            self.node("Clip", [pre, lo, hi], [out])
        else:
            fail(f"unsupported fused activation {act}")

    @staticmethod
    def same_pads(in_size, k, stride, dilation):
        k_eff = (k - 1) * dilation + 1
        out = -(-in_size // stride)
        total = max((out - 1) * stride + k_eff - in_size, 0)
        return total // 2, total - total // 2

    def pads(self, padding, in_shape, kh, kw, sh, sw, dh=1, dw=1):
        if padding == PADDING_VALID:
            return [0, 0, 0, 0]
        t, b = self.same_pads(in_shape[1], kh, sh, dh)
        l, r = self.same_pads(in_shape[2], kw, sw, dw)
        return [t, l, b, r]

    # ---- conversion ------------------------------------------------------
    def needed_ops(self):
        producer = {}
        for k in range(self.g.OperatorsLength()):
            for o in self.g.Operators(k).OutputsAsNumpy():
                producer[int(o)] = k
        need, stack = set(), [self.out_index[n] for n in self.wanted]
        while stack:
            t = stack.pop()
            k = producer.get(t)
            if k is None or k in need:
                continue
            need.add(k)
            stack.extend(int(i) for i in self.g.Operators(k).InputsAsNumpy() if i >= 0)
        return sorted(need)

    def convert(self):
        g = self.g
        self.out_index = {}
        for k in range(g.OutputsLength()):
            self.out_index[self.tensor(g.Outputs(k)).Name().decode()] = int(g.Outputs(k))
        if not self.wanted:
            self.wanted = list(self.out_index)
        for n in self.wanted:
            if n not in self.out_index:
                fail(f"no output named {n}; outputs: {list(self.out_index)}")
        if g.InputsLength() != 1:
            fail("expected one input")
        inp = int(g.Inputs(0))
        in_shape = self.shape(inp)
        graph_inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)]
        self.node("Transpose", ["input"], [self.tname(inp)], perm=[0, 3, 1, 2])

        for k in self.needed_ops():
            op = g.Operators(k)
            oc = self.model.OperatorCodes(op.OpcodeIndex())
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            name = OP_NAMES.get(code, str(code))
            ins = [int(i) for i in op.InputsAsNumpy()]
            outs = [int(o) for o in op.OutputsAsNumpy()]
            getattr(self, "op_" + name.lower(), lambda *a: fail(f"unsupported op {name}"))(op, ins, outs)

        graph_outputs = []
        for n in self.wanted:
            t = self.out_index[n]
            shape = self.shape(t)
            if len(shape) == 4:
                self.node("Transpose", [self.tname(t)], [n], perm=[0, 2, 3, 1])
            else:
                self.node("Identity", [self.tname(t)], [n])
            graph_outputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, shape))

        graph = helper.make_graph(self.nodes, "blazepose", graph_inputs, graph_outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="posture-farm tflite2onnx")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model

    # ---- constant folding --------------------------------------------------
    def op_dequantize(self, op, ins, outs):
        src = self.const(ins[0])
        if src is None:
            fail("DEQUANTIZE of a non-constant tensor")
        self.consts[outs[0]] = src.astype(np.float32)

    def op_densify(self, op, ins, outs):
        values = self.buffer_array(ins[0])
        if values is None or self.tensor(ins[0]).Sparsity() is None:
            fail("DENSIFY of a non-sparse tensor")
        self.consts[outs[0]] = densify(self.tensor(ins[0]), values)

    def weight(self, i):
        w = self.const(i)
        if w is None:
            fail(f"weights of tensor {i} are not constant")
        return w.astype(np.float32)

    # ---- layers --------------------------------------------------------------
    def op_conv_2d(self, op, ins, outs):
        o = opts(op, tflite.Conv2DOptions)
        w = self.weight(ins[1])  # O H W I
        x_shape = self.shape(ins[0])
        pads = self.pads(o.Padding(), x_shape, w.shape[1], w.shape[2], o.StrideH(), o.StrideW(),
                         o.DilationHFactor(), o.DilationWFactor())
        inputs = [self.tname(ins[0]), self.init(w.transpose(0, 3, 1, 2), "w")]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.init(self.weight(ins[2]), "b"))
        pre = self.fresh("conv")
        self.node("Conv", inputs, [pre], kernel_shape=[w.shape[1], w.shape[2]],
                  strides=[o.StrideH(), o.StrideW()], dilations=[o.DilationHFactor(), o.DilationWFactor()],
                  pads=pads, group=1)
        self.activation(o.FusedActivationFunction(), pre, self.tname(outs[0]))

    def op_depthwise_conv_2d(self, op, ins, outs):
        o = opts(op, tflite.DepthwiseConv2DOptions)
        w = self.weight(ins[1])  # 1 H W C*M
        x_shape = self.shape(ins[0])
        channels = x_shape[3]
        pads = self.pads(o.Padding(), x_shape, w.shape[1], w.shape[2], o.StrideH(), o.StrideW(),
                         o.DilationHFactor(), o.DilationWFactor())
        inputs = [self.tname(ins[0]), self.init(w.transpose(3, 0, 1, 2), "w")]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.init(self.weight(ins[2]), "b"))
        pre = self.fresh("dwconv")
        self.node("Conv", inputs, [pre], kernel_shape=[w.shape[1], w.shape[2]],
                  strides=[o.StrideH(), o.StrideW()], dilations=[o.DilationHFactor(), o.DilationWFactor()],
                  pads=pads, group=channels)
        self.activation(o.FusedActivationFunction(), pre, self.tname(outs[0]))

    def op_max_pool_2d(self, op, ins, outs):
        o = opts(op, tflite.Pool2DOptions)
        x_shape = self.shape(ins[0])
        pads = self.pads(o.Padding(), x_shape, o.FilterHeight(), o.FilterWidth(), o.StrideH(), o.StrideW())
        pre = self.fresh("pool")
        self.node("MaxPool", [self.tname(ins[0])], [pre], kernel_shape=[o.FilterHeight(), o.FilterWidth()],
                  strides=[o.StrideH(), o.StrideW()], pads=pads)
        self.activation(o.FusedActivationFunction(), pre, self.tname(outs[0]))

    def op_add(self, op, ins, outs):
        o = opts(op, tflite.AddOptions)
        inputs = []
        for i in ins:
            c = self.const(i)
            if c is not None:
                c = c.astype(np.float32)
                if c.ndim == 4:
                    c = c.transpose(0, 3, 1, 2)
                inputs.append(self.init(c, "c"))
            else:
                inputs.append(self.tname(i))
        pre = self.fresh("add")
        self.node("Add", inputs, [pre])
        self.activation(o.FusedActivationFunction(), pre, self.tname(outs[0]))

    def op_pad(self, op, ins, outs):
        p = self.const(ins[1])
        if p is None:
            fail("PAD with non-constant paddings")
        p = p.astype(np.int64)
        if p.shape[0] == 4:
            order = [0, 3, 1, 2]
            p = p[order]
        onnx_pads = np.concatenate([p[:, 0], p[:, 1]]).astype(np.int64)
        self.node("Pad", [self.tname(ins[0]), self.init(onnx_pads, "pads")], [self.tname(outs[0])], mode="constant")

    def op_depth_to_space(self, op, ins, outs):
        o = opts(op, tflite.DepthToSpaceOptions)
        self.node("DepthToSpace", [self.tname(ins[0])], [self.tname(outs[0])], blocksize=o.BlockSize(), mode="DCR")

    def op_resize_bilinear(self, op, ins, outs):
        o = opts(op, tflite.ResizeBilinearOptions)
        if o.AlignCorners():
            mode = "align_corners"
        elif o.HalfPixelCenters():
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        n, h, w, c = self.shape(outs[0])
        sizes = self.init(np.array([n, c, h, w], np.int64), "sizes")
        self.node("Resize", [self.tname(ins[0]), "", "", sizes], [self.tname(outs[0])], mode="linear",
                  coordinate_transformation_mode=mode)

    def op_reshape(self, op, ins, outs):
        src = self.tname(ins[0])
        if len(self.shape(ins[0])) == 4:
            nhwc = self.fresh("nhwc")
            self.node("Transpose", [src], [nhwc], perm=[0, 2, 3, 1])
            src = nhwc
        out_shape = self.shape(outs[0])
        shape = self.init(np.array(out_shape, np.int64), "shape")
        if len(out_shape) == 4:
            tmp = self.fresh("reshaped")
            self.node("Reshape", [src, shape], [tmp])
            self.node("Transpose", [tmp], [self.tname(outs[0])], perm=[0, 3, 1, 2])
        else:
            self.node("Reshape", [src, shape], [self.tname(outs[0])])

    def op_concatenation(self, op, ins, outs):
        o = opts(op, tflite.ConcatenationOptions)
        rank = len(self.shape(outs[0]))
        axis = o.Axis() % rank
        if rank == 4:
            axis = NHWC_TO_NCHW_AXIS[axis]
        pre = self.fresh("concat")
        self.node("Concat", [self.tname(i) for i in ins], [pre], axis=axis)
        self.activation(o.FusedActivationFunction(), pre, self.tname(outs[0]))

    def op_logistic(self, op, ins, outs):
        self.node("Sigmoid", [self.tname(ins[0])], [self.tname(outs[0])])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--outputs", default="", help="comma-separated TFLite output names to keep (default: all)")
    a = ap.parse_args()
    with open(a.input, "rb") as f:
        buf = f.read()
    wanted = [s for s in a.outputs.split(",") if s]
    model = Converter(buf, wanted).convert()
    onnx.save(model, a.output)


if __name__ == "__main__":
    main()
