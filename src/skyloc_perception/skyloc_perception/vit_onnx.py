"""ViT patch features through ONNX Runtime: the runtime backbone (the one the Pi runs).

Imports only numpy and onnxruntime (OpenCV only to resize an image that is not S x S yet; no
torch). The ONNX model is a DINOv2/DINOv3 ViT truncated at a chosen layer and facet (written by
``vit_torch.export_onnx``): its one input is a ``[1, 3, S, S]`` float32 image normalised with
the ImageNet mean/std, its output ``tokens`` is ``[1, T, D]`` float32 with all tokens (CLS, then
register tokens if any, then the ``N = (S / p)^2`` patch tokens in row-major order).
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
        if len(out_shape) != 3:
            raise ValueError(f'{self.path}: expected a [1, T, D] token output, got {out_shape}')
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
        return self.session.run([self._output_name], {self._input_name: x})[0]

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
