"""ViT patch features through ONNX Runtime: the runtime backbone (the one the Pi runs).

Imports only numpy and onnxruntime (OpenCV only to resize an image that is not S x S yet; no
torch). The ONNX model is a DINOv2/DINOv3 ViT truncated at a chosen layer and facet (written by
``vit_torch.export_onnx``): its one input is a ``[1, 3, S, S]`` float32 image normalised with
the ImageNet mean/std, its output ``tokens`` is ``[1, T, D]`` float32 with all tokens (CLS, then
register tokens if any, then the ``N = (S / p)^2`` patch tokens in row-major order).  A global
model (bundle kind ``global``: the whole network and a head) outputs one ``[1, D]`` descriptor
instead, read here as a single token (``T = 1``, use ``drop_tokens=0``).
"""

import ctypes
import ctypes.util
import os

import numpy as np
import onnxruntime as ort

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(rgb, input_size):
    """Resize and normalise one RGB image for the ViT.

    Args:
        rgb: H x W x 3 uint8 RGB image (any size).
        input_size: side S of the square network input, px.

    Returns:
        [1, 3, S, S] float32, C-contiguous: the image resized to S x S with ``cv2.INTER_AREA``,
        scaled to [0, 1] and normalised per channel with the ImageNet mean/std.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected an H x W x 3 RGB image, got shape {rgb.shape}')
    if rgb.dtype != np.uint8:
        raise ValueError(f'expected a uint8 image, got {rgb.dtype}')
    size = int(input_size)
    if size <= 0:
        raise ValueError(f'input_size must be positive, got {input_size}')
    if rgb.shape[0] != size or rgb.shape[1] != size:
        import cv2  # only here: the node's crops are already S x S (cv2 is 15 MB of RSS)
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def l2_normalise_rows(x, eps=1e-12):
    """[N, D] float -> [N, D] float32 with each row of unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, eps), dtype=np.float32)


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
LOW_MEMORY_MMAP_THRESHOLD = 256 * 1024  # while a model loads
RUN_MMAP_THRESHOLD = 512 * 1024  # after


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        return libc if hasattr(libc, 'mallopt') and hasattr(libc, 'malloc_trim') else None
    except OSError:
        return None


def limit_heap_retention(mmap_threshold=LOW_MEMORY_MMAP_THRESHOLD):
    """Process-wide (glibc only, a no-op elsewhere): serve allocations of ``mmap_threshold``
    bytes or more with their own mmap, returned to the OS when freed, and trim the heap.

    glibc's default threshold adapts: after the first large block is freed it rises (up to
    32 MiB), and from then on large temporaries (ONNX Runtime's copies of the model while it
    loads, prepacks and optimises it) come from the heap and stay resident after ``free``.
    Measured on the INT8 ViT-S (bench/results/perception.json, onnx_rss): the session's peak
    RSS drops by ~11 MB. Cost: each later large allocation page-faults afresh; ONNX Runtime's
    activations come from its arena (kept) so inference is not slowed. Returns True if set.
    """
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    libc.malloc_trim(0)
    return ok


class OnnxVitBackbone:
    """Backbone interface over a truncated-ViT ONNX model run by ONNX Runtime on the CPU.

    Attributes:
        name: label of the backbone, e.g. ``'vit_small_patch14_dinov2/L9/value'``.
        dim: feature dimension D, read from the model's output shape.
        input_size: side S of the square network input, px.
        num_tokens: T, tokens the model outputs (``drop_tokens`` + patches).
        num_patches: N = T - drop_tokens, rows returned by ``features``.
        path: the ONNX file.
    """

    def __init__(self, onnx_path, input_size, name='vit', threads=1, drop_tokens=1,
                 low_memory=True):
        """Open ``onnx_path`` in an ONNX Runtime session.

        Args:
            onnx_path: path of the ONNX model (FP32 or INT8).
            input_size: side S of the square input, px; must match the model's input if static.
            name: label stored as ``self.name``.
            threads: intra-op threads of the session (1 on the Pi, the node does one image at a
                time); inter-op threads are always 1.
            drop_tokens: leading tokens that are not patches (1 for DINOv2: CLS; 5 for DINOv3 and
                DINOv2 with 4 registers: CLS + registers).
            low_memory: call ``limit_heap_retention`` (process-wide glibc setting) before
                loading and trim the heap after: ~11 MB less peak RSS, same speed.

        Raises:
            ValueError: the file is missing, the arguments are invalid or the model's input/output
                shapes do not fit.
            RuntimeError: the file is not a model ONNX Runtime can load.
        """
        self.path = os.fspath(onnx_path)
        self.name = str(name)
        self.input_size = int(input_size)
        self.drop_tokens = int(drop_tokens)
        if self.input_size <= 0:
            raise ValueError(f'input_size must be positive, got {input_size}')
        if int(threads) < 1:
            raise ValueError(f'threads must be >= 1, got {threads}')
        if self.drop_tokens < 0:
            raise ValueError(f'drop_tokens must be >= 0, got {drop_tokens}')
        if not os.path.isfile(self.path):
            raise ValueError(f'ONNX model file not found: {self.path}')
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # activations from ORT's arena (kept between runs, no memory patterns): with
        # low_memory's mmap threshold, malloc'd activations would page-fault on every run
        # (+40 ms measured); the arena holds ~8 MB after the first run
        opts.enable_cpu_mem_arena = bool(low_memory)
        opts.enable_mem_pattern = False
        if low_memory:
            limit_heap_retention()
        try:
            self.session = ort.InferenceSession(self.path, sess_options=opts,
                                                providers=['CPUExecutionProvider'])
        except Exception as exc:  # ORT raises its own pybind exception types
            raise RuntimeError(f'cannot load ONNX model {self.path}: not a valid ONNX model '
                               f'for onnxruntime {ort.__version__} '
                               f'({type(exc).__name__}: {exc})') from exc
        # (shrinking the arena after each run, memory.enable_memory_arena_shrinkage, was
        # measured and left out: 1-2.5 MB less peak RSS for 8% more inference time)
        if low_memory and _libc() is not None:
            _libc().malloc_trim(0)
            # then 512 KiB: VLAD's numpy temporaries (0.4 MB) come from the heap again (with
            # 256 KiB each one page-faults afresh: VLAD 0.6 -> 3 ms measured), camera frames
            # (0.9 MB) are still returned to the OS as soon as they are freed
            _libc().mallopt(_M_MMAP_THRESHOLD, RUN_MMAP_THRESHOLD)
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ValueError(f'{self.path}: expected one image input and a token output, got '
                             f'{len(inputs)} inputs and {len(outputs)} outputs')
        self._input_name = inputs[0].name
        names = [o.name for o in outputs]
        self._output_name = 'tokens' if 'tokens' in names else names[0]
        in_shape = list(inputs[0].shape)
        if len(in_shape) != 4:
            raise ValueError(f'{self.path}: expected a [1, 3, S, S] input, got {in_shape}')
        static = [d for d in in_shape[2:] if isinstance(d, int)]
        if any(d != self.input_size for d in static):
            raise ValueError(f'{self.path}: model input is {in_shape[2:]} px, '
                             f'input_size is {self.input_size}')
        out_shape = list(outputs[names.index(self._output_name)].shape)
        if len(out_shape) == 2:  # a global descriptor [1, D]: one token of dimension D
            out_shape = [out_shape[0], 1, out_shape[1]]
        if len(out_shape) != 3:
            raise ValueError(f'{self.path}: expected a [1, T, D] token output or a [1, D] '
                             f'descriptor, got {out_shape}')
        dim, tokens = out_shape[2], out_shape[1]
        if not isinstance(dim, int) or not isinstance(tokens, int):
            probe = self._run(np.zeros((1, 3, self.input_size, self.input_size), np.float32))
            tokens, dim = probe.shape[1], probe.shape[2]
        self.dim = int(dim)
        self.num_tokens = int(tokens)
        self.num_patches = self.num_tokens - self.drop_tokens
        if self.num_patches <= 0:
            raise ValueError(f'{self.path}: the model outputs {self.num_tokens} tokens, '
                             f'drop_tokens={self.drop_tokens} leaves none')

    def _run(self, x):
        out = self.session.run([self._output_name], {self._input_name: x})[0]
        return out[:, None, :] if out.ndim == 2 else out  # [1, D] descriptor -> [1, 1, D]

    def tokens(self, rgb):
        """H x W x 3 uint8 RGB -> [T, D] float32 raw tokens (all of them, not normalised)."""
        return self._run(preprocess(rgb, self.input_size))[0]

    def features(self, rgb):
        """Per-patch features of one image.

        Args:
            rgb: H x W x 3 uint8 RGB image; resized to input_size x input_size (INTER_AREA).

        Returns:
            [N, D] float32, one row per patch in row-major patch order, rows L2-normalised.
        """
        tok = self.tokens(rgb)
        return l2_normalise_rows(tok[self.drop_tokens:])

    def __repr__(self):
        return (f'OnnxVitBackbone(name={self.name!r}, dim={self.dim}, '
                f'input_size={self.input_size}, path={self.path!r})')


# ------------------------------------------------------------------ offline: CPU graph, INT8
# These functions prepare the deployed model (on a workstation, with the ``onnx`` package);
# the runtime above needs none of them.

MAX_IR_VERSION = 12  # the newest IR onnxruntime 1.31.1 loads
# node types of the multi-head attention subgraph of a timm ViT as torch.onnx exports it
# (qkv reshape/split, the scale computed from the shape, Q.K^T, softmax, A.V, merge heads);
# anything else inside (e.g. RoPE's Neg/Add/Concat, q/k norms) leaves the block unfused
_ATTENTION_OPS = {'Reshape', 'Transpose', 'Split', 'Squeeze', 'Mul', 'Div', 'MatMul', 'Softmax',
                  'Shape', 'Slice', 'Gather', 'Cast', 'Sqrt', 'Constant', 'Unsqueeze'}


class _Graph:
    """Producer/consumer maps and constant lookup over an onnx GraphProto."""

    def __init__(self, graph):
        from onnx import numpy_helper
        self.g = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                       if n.op_type == 'Constant' and n.attribute and
                       n.attribute[0].name == 'value'}
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.consumers = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}

    def const(self, name):
        from onnx import numpy_helper
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        return self.consts.get(name)

    def is_init(self, name):
        return name in self.inits

    def prod(self, name, op):
        n = self.producer.get(name)
        return n if n is not None and n.op_type == op else None

    def only_consumer(self, name, op):
        cs = self.consumers.get(name, [])
        if name in self.outputs or len(cs) != 1 or cs[0].op_type != op:
            return None
        return cs[0]


def _resolve_identities(graph):
    """Make nodes read initializers directly instead of through Identity nodes (the
    exporter's de-duplication of equal weights); returns the number removed."""
    inits = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == 'Identity' and n.input[0] in inits and n.output[0] not in outputs}
    for n in graph.node:
        for k, name in enumerate(n.input):
            if name in alias:
                n.input[k] = alias[name]
    keep = [n for n in graph.node if not (n.op_type == 'Identity' and n.output[0] in alias)]
    del graph.node[:]
    graph.node.extend(keep)
    return len(alias)


def _remove_dead(graph):
    """Drop nodes whose outputs nothing reads, then unused initializers."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        keep = [n for n in graph.node if any(o in used for o in n.output if o)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _match_attention(G, softmax):
    """The attention subgraph around one Softmax, or None.

    Returns (input, weight, bias, num_heads, output, node ids to drop): qkv = input @ weight +
    bias reshaped to [B, T, 3, H, Dh], q, k, v split from it, softmax(q k^T * s) v, heads
    merged back to [B, T, H * Dh] as ``output``.
    """
    qk = G.prod(softmax.input[0], 'MatMul')
    av = G.only_consumer(softmax.output[0], 'MatMul')
    if qk is None or av is None or av.input[0] != softmax.output[0]:
        return None
    merge_t = G.only_consumer(av.output[0], 'Transpose')
    merge_r = merge_t is not None and G.only_consumer(merge_t.output[0], 'Reshape')
    if not merge_r or list(merge_t.attribute[0].ints) != [0, 2, 1, 3]:
        return None
    # walk back from the merged output to the qkv bias Add; everything on the way must be an
    # attention op and nothing outside may read it
    inner, stack, add = {}, [merge_r], None
    while stack:
        n = stack.pop()
        if id(n) in inner:
            continue
        if n.op_type == 'Add':
            if add is not None and add is not n:
                return None
            add = n
            continue
        if n.op_type not in _ATTENTION_OPS:
            return None
        inner[id(n)] = n
        for name in n.input:
            p = G.producer.get(name)
            if p is not None:
                stack.append(p)
            elif not (G.is_init(name) or name in G.consts or name == ''):
                return None  # reads a graph input: not an attention subgraph
    if add is None or len(add.input) != 2:
        return None
    bias_name = next((i for i in add.input if G.is_init(i)), None)
    mm = next((G.prod(i, 'MatMul') for i in add.input if G.prod(i, 'MatMul') is not None), None)
    if bias_name is None or mm is None or not G.is_init(mm.input[1]):
        return None
    if len(G.consumers.get(mm.output[0], [])) != 1 or \
            any(c is not add and id(c) not in inner for c in G.consumers.get(add.output[0], [])):
        return None
    for n in inner.values():
        if n is merge_r:
            continue
        for o in n.output:
            if o in G.outputs or any(id(c) not in inner for c in G.consumers.get(o, [])):
                return None
    # the [B, T, 3, H, Dh] reshape right after the bias Add gives the heads
    split_r = [c for c in G.consumers.get(add.output[0], []) if c.op_type == 'Reshape']
    shape = G.const(split_r[0].input[1]) if len(split_r) == 1 else None
    weight = G.const(mm.input[1])
    if shape is None or shape.size != 5 or int(shape[2]) != 3 or weight.ndim != 2 or \
            weight.shape[1] != 3 * int(shape[3]) * int(shape[4]):
        return None
    drop = set(inner) | {id(add), id(mm)}
    return mm.input[0], mm.input[1], bias_name, int(shape[3]), merge_r.output[0], drop


def _fuse_attention(model):
    """Replace each matched attention subgraph by one com.microsoft Attention node."""
    from onnx import helper, TensorProto
    g = model.graph
    G = _Graph(g)
    replace, drop = {}, set()
    for sm in [n for n in g.node if n.op_type == 'Softmax']:
        m = _match_attention(G, sm)
        if m is None:
            continue
        x, w, b, heads, out, ids = m
        last = G.producer[out]  # the head-merge Reshape: Attention takes its place
        replace[id(last)] = helper.make_node(
            'Attention', [x, w, b], [out], domain='com.microsoft',
            name=last.name + '/fused_attention', num_heads=heads)
        drop |= ids - {id(last)}
        # onnx shape inference does not know com.microsoft ops: the quantizer needs the type
        g.value_info.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    nodes = [replace.get(id(n), n) for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(nodes)
    return len(replace)


def _fold_layerscale(model):
    """x @ W + b, then * gamma (a LayerScale) -> x @ (W gamma) + b gamma: FP32-exact up to
    rounding, and per-channel INT8 absorbs gamma in the weight scales."""
    from onnx import numpy_helper
    g = model.graph
    G = _Graph(g)
    folded = 0
    for mul in [n for n in g.node if n.op_type == 'Mul']:
        gamma_name = [i for i in mul.input if G.is_init(i)]
        if len(gamma_name) != 1 or len(mul.input) != 2:
            continue
        gamma = G.const(gamma_name[0])
        add = G.prod(next(i for i in mul.input if i != gamma_name[0]), 'Add')
        if add is None or G.only_consumer(add.output[0], 'Mul') is not mul:
            continue
        bias_name = [i for i in add.input if G.is_init(i)]
        mm = next((G.prod(i, 'MatMul') for i in add.input if not G.is_init(i)), None)
        if len(bias_name) != 1 or mm is None or not G.is_init(mm.input[1]) or \
                G.only_consumer(mm.output[0], 'Add') is not add:
            continue
        w, b = G.const(mm.input[1]), G.const(bias_name[0])
        if gamma.ndim != 1 or w.ndim != 2 or b.shape != gamma.shape or \
                w.shape[1] != gamma.size:
            continue
        tag = f'_layerscale{folded}'
        g.initializer.extend([numpy_helper.from_array((w * gamma).astype(np.float32),
                                                      mm.input[1] + tag),
                              numpy_helper.from_array((b * gamma).astype(np.float32),
                                                      bias_name[0] + tag)])
        mm.input[1] = mm.input[1] + tag
        add.input[list(add.input).index(bias_name[0])] = bias_name[0] + tag
        for c in G.consumers.get(mul.output[0], []):
            for k, name in enumerate(c.input):
                if name == mul.output[0]:
                    c.input[k] = add.output[0]
        if mul.output[0] in G.outputs:
            add.output[0] = mul.output[0]  # the Mul was the Add's only reader
        g.node.remove(mul)
        folded += 1
    return folded


def _max_output_diff(path_a, path_b, input_size, seed=0):
    """Largest |difference| of the two models' outputs on one random image (ORT, CPU)."""
    x = np.random.default_rng(seed).standard_normal((1, 3, input_size, input_size))
    outs = []
    for path in (path_a, path_b):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(path, sess_options=opts, providers=['CPUExecutionProvider'])
        outs.append(sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0])
    return float(np.abs(outs[0] - outs[1]).max()), float(np.abs(outs[0]).max())


def fuse_vit_graph(fp32_path, out_path, tolerance=1e-4):
    """Rewrite an exported truncated ViT (``vit_torch.export_onnx``) for ONNX Runtime's CPU
    kernels, before quantization. FP32 in, FP32 out, the same function:

    - each block's multi-head attention subgraph (qkv MatMul + bias, reshape, split, scaled
      Q.K^T, softmax, A.V, head merge: ~15 nodes) becomes one ``com.microsoft`` ``Attention``
      node, which ``quantize_int8_cpu`` turns into ``QAttention`` (INT8 qkv projection, no
      transposes/splits between kernels);
    - LayerScale multiplications after a Linear are folded into its weight and bias;
    - Identity nodes over shared initializers are resolved.

    Blocks that do not match (e.g. DINOv3's RoPE attention) are left as they are. The result
    is checked against the input model on a random image (max |diff| <= ``tolerance`` x the
    output's max |value|); if it is not, the input model is written unchanged.

    Returns:
        {'attention': fused blocks, 'layerscale': folded Mul nodes, 'max_abs_diff': float}.
    """
    import onnx
    model = onnx.load(os.fspath(fp32_path))
    _resolve_identities(model.graph)
    attention = _fuse_attention(model)
    layerscale = _fold_layerscale(model)
    _remove_dead(model.graph)
    if attention and not any(o.domain == 'com.microsoft' for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid('com.microsoft', 1))
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
    out_path = os.fspath(out_path)
    tmp = out_path + '.tmp'
    onnx.save(model, tmp)
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    diff, scale = _max_output_diff(fp32_path, tmp, size)
    if not diff <= tolerance * max(scale, 1e-6):
        attention = layerscale = 0
        model = onnx.load(os.fspath(fp32_path))
        onnx.save(model, tmp)
        diff = 0.0
    os.replace(tmp, out_path)
    return {'attention': attention, 'layerscale': layerscale, 'max_abs_diff': diff}


def quantize_int8_cpu(fp32_path, int8_path, per_channel=True, fuse=True, exclude_prefixes=()):
    """The deployed INT8 model: ``fuse_vit_graph`` then dynamic INT8 (onnxruntime
    ``quantize_dynamic``) of the MatMuls with constant weights *and* the fused Attention nodes
    (-> ``QAttention``: INT8 qkv projection, FP32 softmax(Q.K^T) V), weights signed int8 per
    output channel, activations uint8 per tensor quantized at run time.

    On a CPU without VNNI (AVX2 only) this is what makes INT8 worth it: ``vit_torch.
    quantize_int8`` of the unfused graph spends a third of its time in transposes, splits and
    the attention MatMuls between the INT8 kernels (bench/results/perception.json, profile).
    ``fuse=False``: quantize the graph as exported (``vit_torch.quantize_int8`` equivalent).
    ``exclude_prefixes``: nodes whose name starts with one of these stay FP32 (e.g. '/head'
    for the MLP head of a global model, whose 256-d output INT8 perturbs most).

    Returns:
        {'path': int8_path, 'attention': ..., 'layerscale': ..., 'max_abs_diff': ...}.
    """
    import contextlib
    import logging
    import tempfile
    import warnings

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path, int8_path = os.fspath(fp32_path), os.fspath(int8_path)
    if not os.path.isfile(fp32_path):
        raise ValueError(f'ONNX model file not found: {fp32_path}')
    info = {'attention': 0, 'layerscale': 0, 'max_abs_diff': 0.0}
    with tempfile.TemporaryDirectory() as tmpdir:
        src = fp32_path
        if fuse:
            src = os.path.join(tmpdir, 'fused.onnx')
            info = fuse_vit_graph(fp32_path, src)
        tmp = os.path.join(tmpdir, 'int8.onnx')

        class _NoHint(logging.Filter):
            def filter(self, record):
                return 'pre-processing before quantization' not in record.getMessage()

        root, hint = logging.getLogger(), _NoHint()
        root.addFilter(hint)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(None):
                warnings.simplefilter('ignore')
                # (the quantizer turns a Gemm into '<name>_MatMul' + Add before it looks)
                excluded = [name for n in onnx.load(src, load_external_data=False).graph.node
                            if any(n.name.startswith(p) for p in exclude_prefixes)
                            for name in (n.name, n.name + '_MatMul')]
                quantize_dynamic(src, tmp, op_types_to_quantize=['MatMul', 'Gemm', 'Attention'],
                                 per_channel=bool(per_channel), weight_type=QuantType.QInt8,
                                 nodes_to_exclude=excluded,
                                 extra_options={'MatMulConstBOnly': True})
                info['fp32_nodes'] = len(excluded) // 2
        finally:
            root.removeFilter(hint)
        model = onnx.load(tmp)
        if model.ir_version > MAX_IR_VERSION:
            model.ir_version = MAX_IR_VERSION
        onnx.save(model, int8_path + '.tmp')
    os.replace(int8_path + '.tmp', int8_path)
    info['path'] = int8_path
    return info
