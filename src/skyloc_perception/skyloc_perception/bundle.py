"""Model bundles (DESIGN.md "Files") and the descriptor pipeline built from one.

A bundle is a folder with ``bundle.json``::

    {"format_version": 1, "kind": "local_vlad" | "global", "backend": "onnx" | "rootsift",
     "input_size": 224, "layer": 9, "facet": "value", "drop_tokens": 1,
     "files": {"vocabulary.npy": "<sha256>", "pca.npz": "<sha256>", "model.onnx": "<sha256>"},
     "model_id": "<sha256 over the files' names and hashes>"}

plus those files: the ONNX model (backend onnx), ``vocabulary.npy`` (K x D, local_vlad) and
optionally ``pca.npz`` (mean, components, whitening). Loading refuses, with a message naming the
file and the problem, a bundle whose format_version, file hashes, model_id or dimensions do not
match. A descriptor is a float32 L2-normalised vector; its model_id travels in every Descriptor.
"""

from dataclasses import dataclass, field
import json
import os

import numpy as np

FORMAT_VERSION = 1
KINDS = ('local_vlad', 'global')
BACKENDS = ('onnx', 'rootsift')


class BundleError(ValueError):
    """A bundle is missing, incomplete, corrupt or inconsistent (the message says which)."""


def _sha256():
    """CPython's built-in SHA-256 where there is one: ``hashlib`` maps OpenSSL's libcrypto
    (+3.6 MB RSS measured, bench/results/perception.json core_rss) for a check made once per
    start (17 MB INT8 model: 90 ms instead of 12 ms)."""
    for module in ('_sha2', '_sha256'):  # Python >= 3.12, 3.11
        try:
            return __import__(module).sha256()
        except (ImportError, AttributeError):
            pass
    import hashlib
    return hashlib.sha256()


def file_sha256(path, chunk=1 << 18):
    digest = _sha256()
    buf = bytearray(chunk)  # one reused buffer: fresh 1 MB reads left +1.9 MB on the heap
    view = memoryview(buf)
    with open(path, 'rb') as stream:
        while True:
            n = stream.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def compute_model_id(file_hashes):
    """sha256 over 'name:sha256' lines of the bundle's files, sorted by name."""
    text = '\n'.join(f'{name}:{file_hashes[name]}' for name in sorted(file_hashes))
    digest = _sha256()
    digest.update(text.encode())
    return digest.hexdigest()


@dataclass
class Bundle:
    path: str
    kind: str
    backend: str
    input_size: int
    model_id: str
    meta: dict = field(default_factory=dict)
    vocabulary: np.ndarray = None
    pca: object = None

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def onnx_path(self):
        names = [n for n in self.meta['files'] if n.endswith('.onnx')]
        return self.file(names[0]) if names else None

    @property
    def descriptor_dim(self):
        if self.pca is not None:
            return self.pca.dim
        if self.kind == 'local_vlad':
            return int(self.vocabulary.shape[0] * self.vocabulary.shape[1])
        return int(self.meta.get('output_dim', 0))


def write_bundle(out_dir, backend, input_size, vocabulary=None, pca=None, onnx_file=None,
                 kind='local_vlad', layer=None, facet=None, drop_tokens=1, extra=None,
                 pca_dtype='float16'):
    """Write a bundle folder (copying onnx_file into it); returns the loaded Bundle.

    ``pca_dtype``: storage of the PCA components, the largest array of a bundle (VLAD 12288
    -> 256 dims: 12 MB float32). float16 halves it in the file and in the memory of every
    process that loads the bundle (``Pca.transform`` still computes in float32); descriptors
    change by ~1e-4 relative, and a database built with the bundle uses the same matrix.
    """
    import shutil
    if kind not in KINDS:
        raise BundleError(f"kind must be one of {KINDS}, got '{kind}'")
    if backend not in BACKENDS:
        raise BundleError(f"backend must be one of {BACKENDS}, got '{backend}'")
    os.makedirs(out_dir, exist_ok=True)
    names = []
    if vocabulary is not None:
        np.save(os.path.join(out_dir, 'vocabulary.npy'), np.asarray(vocabulary, np.float32))
        names.append('vocabulary.npy')
    if pca is not None:
        pca.save(os.path.join(out_dir, 'pca.npz'), dtype=pca_dtype)
        names.append('pca.npz')
    if onnx_file is not None:
        target = os.path.join(out_dir, os.path.basename(onnx_file))
        if os.path.abspath(onnx_file) != os.path.abspath(target):
            shutil.copyfile(onnx_file, target)
        names.append(os.path.basename(onnx_file))
    hashes = {n: file_sha256(os.path.join(out_dir, n)) for n in names}
    meta = {'format_version': FORMAT_VERSION, 'kind': kind, 'backend': backend,
            'input_size': int(input_size), 'layer': layer, 'facet': facet,
            'drop_tokens': int(drop_tokens), 'files': hashes,
            'model_id': compute_model_id(hashes)}
    meta.update(extra or {})
    with open(os.path.join(out_dir, 'bundle.json'), 'w') as stream:
        json.dump(meta, stream, indent=2)
    return load_bundle(out_dir)


def load_bundle(path):
    """Read and verify a bundle folder; BundleError naming the file and the problem."""
    from skyloc_perception.vlad import Pca
    manifest = os.path.join(path, 'bundle.json')
    if not os.path.isdir(path):
        raise BundleError(f'{path}: bundle folder not found')
    if not os.path.isfile(manifest):
        raise BundleError(f'{manifest}: missing (not a model bundle)')
    try:
        with open(manifest) as stream:
            meta = json.load(stream)
    except (OSError, ValueError) as exc:
        raise BundleError(f'{manifest}: cannot parse: {exc}') from exc
    for key in ('format_version', 'kind', 'backend', 'input_size', 'files', 'model_id'):
        if key not in meta:
            raise BundleError(f"{manifest}: required field '{key}' is missing")
    if meta['format_version'] != FORMAT_VERSION:
        raise BundleError(f'{manifest}: format_version {meta["format_version"]} is not the '
                          f'supported {FORMAT_VERSION}')
    if meta['kind'] not in KINDS or meta['backend'] not in BACKENDS:
        raise BundleError(f"{manifest}: unknown kind '{meta['kind']}' or backend "
                          f"'{meta['backend']}'")
    for name, digest in meta['files'].items():
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            raise BundleError(f'{manifest}: listed file {name} is missing')
        if file_sha256(full) != digest:
            raise BundleError(f'{full}: sha256 does not match bundle.json (corrupt or replaced)')
    if compute_model_id(meta['files']) != meta['model_id']:
        raise BundleError(f'{manifest}: model_id does not match its files')
    bundle = Bundle(path=path, kind=meta['kind'], backend=meta['backend'],
                    input_size=int(meta['input_size']), model_id=meta['model_id'], meta=meta)
    if meta['backend'] == 'onnx' and bundle.onnx_path is None:
        raise BundleError(f'{manifest}: backend onnx but no .onnx file listed')
    if meta['kind'] == 'local_vlad':
        if 'vocabulary.npy' not in meta['files']:
            raise BundleError(f'{manifest}: kind local_vlad needs vocabulary.npy')
        try:
            bundle.vocabulary = np.load(bundle.file('vocabulary.npy')).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise BundleError(f"{bundle.file('vocabulary.npy')}: cannot read: {exc}") from exc
        if bundle.vocabulary.ndim != 2 or min(bundle.vocabulary.shape) < 1:
            raise BundleError(f"{bundle.file('vocabulary.npy')}: expected K x D, got "
                              f'{bundle.vocabulary.shape}')
    if 'pca.npz' in meta['files']:
        try:
            bundle.pca = Pca.load(bundle.file('pca.npz'))
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{bundle.file('pca.npz')}: cannot read: {exc}") from exc
        if bundle.vocabulary is not None:
            vlad_dim = bundle.vocabulary.shape[0] * bundle.vocabulary.shape[1]
            if bundle.pca.dim_in != vlad_dim:
                raise BundleError(f"{bundle.file('pca.npz')}: input dimension "
                                  f'{bundle.pca.dim_in} does not match the VLAD dimension '
                                  f'{vlad_dim} of vocabulary.npy')
    return bundle


def make_backbone(bundle, threads=1):
    """The bundle's backbone; BundleError if its feature dimension does not fit the vocabulary."""
    if bundle.backend == 'rootsift':
        from skyloc_perception.rootsift import RootSiftBackbone
        backbone = RootSiftBackbone(input_size=bundle.input_size,
                                    **bundle.meta.get('rootsift', {}))
    else:
        from skyloc_perception.vit_onnx import OnnxVitBackbone
        # a global model outputs its descriptor ([1, D]): no CLS/register tokens to drop
        drop = int(bundle.meta.get('drop_tokens', 1 if bundle.kind == 'local_vlad' else 0))
        try:
            backbone = OnnxVitBackbone(bundle.onnx_path, bundle.input_size,
                                       name=bundle.meta.get('name', 'vit'), threads=threads,
                                       drop_tokens=drop)
        except (OSError, RuntimeError, ValueError) as exc:
            raise BundleError(f'{bundle.onnx_path}: cannot load the ONNX model: {exc}') from exc
        if bundle.kind == 'global' and bundle.meta.get('output_dim') and bundle.pca is None:
            got = backbone.dim * backbone.num_patches
            if got != int(bundle.meta['output_dim']):
                raise BundleError(f"{bundle.file('bundle.json')}: output_dim "
                                  f"{bundle.meta['output_dim']} does not match the ONNX "
                                  f'model output ({backbone.num_patches} x {backbone.dim})')
    if bundle.kind == 'local_vlad' and backbone.dim != bundle.vocabulary.shape[1]:
        raise BundleError(f"{bundle.file('vocabulary.npy')}: vocabulary dimension "
                          f'{bundle.vocabulary.shape[1]} does not match the backbone '
                          f"'{backbone.name}' feature dimension {backbone.dim}")
    return backbone


class DescriptorPipeline:
    """Normalised crop (north-up, footprint square) -> descriptor, as the bundle defines it."""

    def __init__(self, bundle, threads=1, float16=False):
        from skyloc_perception.vlad import Vlad
        self.bundle = bundle
        self.backbone = make_backbone(bundle, threads)
        self.vlad = Vlad(bundle.vocabulary, **bundle.meta.get('vlad', {})) \
            if bundle.kind == 'local_vlad' else None
        self.float16 = float16

    @property
    def model_id(self):
        return self.bundle.model_id

    @property
    def input_size(self):
        return self.bundle.input_size

    @property
    def dim(self):
        return self.bundle.descriptor_dim or self.backbone.dim

    def describe(self, crop_rgb):
        """Descriptor of one crop: float32 (or float16) vector, L2-normalised."""
        features = self.backbone.features(crop_rgb)
        if self.vlad is not None:
            vector = self.vlad.encode(features)
        else:  # global kind: the network's pooled output
            vector = features.reshape(-1).astype(np.float32)
            vector /= max(float(np.linalg.norm(vector)), 1e-12)
        if self.bundle.pca is not None:
            vector = self.bundle.pca.transform(vector[None, :])[0]
        return vector.astype(np.float16 if self.float16 else np.float32)
