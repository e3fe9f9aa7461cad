"""Preset directories (KerasHub layout), the download cache and checksums."""

import datetime
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request

import keras

from keras_solov2.version import __version__

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
CACHE_ENV = "KERAS_SOLOV2_CACHE"


def cache_dir():
    """Where downloads and converted presets live: `$KERAS_SOLOV2_CACHE` or
    `~/.cache/keras_solov2`."""
    return os.path.expanduser(os.environ.get(CACHE_ENV) or "~/.cache/keras_solov2")


def is_preset_dir(path):
    return os.path.isdir(path) and os.path.exists(os.path.join(path, CONFIG_FILE))


def save_to_preset(model, preset_dir, metadata=None):
    """Writes `config.json`, `model.weights.h5` and `metadata.json`.

    The layout is KerasHub's, so a preset can be shared or uploaded like one.
    """
    os.makedirs(preset_dir, exist_ok=True)
    config = keras.saving.serialize_keras_object(model)
    with open(os.path.join(preset_dir, CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2)
    model.save_weights(os.path.join(preset_dir, WEIGHTS_FILE))
    info = {
        "keras_version": keras.version(),
        "keras_solov2_version": __version__,
        "parameter_count": int(model.count_params()),
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
    }
    info.update(metadata or {})
    with open(os.path.join(preset_dir, METADATA_FILE), "w") as f:
        json.dump(info, f, indent=2)


def load_preset_dir(preset_dir, load_weights=True):
    """Builds the model of a preset directory and loads its weights."""
    config_path = os.path.join(preset_dir, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise ValueError(
            f"{preset_dir} is not a keras_solov2 preset directory: {CONFIG_FILE} is "
            "missing. Create one with `model.save_to_preset(dir)`."
        )
    with open(config_path) as f:
        config = json.load(f)
    model = keras.saving.deserialize_keras_object(config)
    if load_weights:
        weights = os.path.join(preset_dir, WEIGHTS_FILE)
        if not os.path.exists(weights):
            raise ValueError(f"{preset_dir}: {WEIGHTS_FILE} is missing.")
        model.load_weights(weights)
    return model


def sha256sum(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path, sha256=None, sha256_prefix=None):
    """Checks a file against its expected sha256 and returns the actual one.

    Args:
        path: str. The file.
        sha256: optional str. The full hex digest.
        sha256_prefix: optional str. The digest's first characters (the
            8 that mmdetection puts in its file names). Used when `sha256`
            is not given.

    Raises:
        ValueError: naming the file, when neither hash is given (a file is
            never accepted unchecked), or when the file's sha256 disagrees.
    """
    expected = _expected_hash(path, sha256, sha256_prefix)
    actual = sha256sum(path)
    if not actual.startswith(expected):
        raise ValueError(
            f"{path}: sha256 {actual} does not match the expected "
            f"{'hash' if sha256 else 'prefix'} {expected}. The file is corrupt or not "
            "the official checkpoint; delete it and download it again."
        )
    return actual


def _expected_hash(path, sha256, sha256_prefix):
    expected = (sha256 or sha256_prefix or "").strip().lower()
    if not expected:
        raise ValueError(
            f"{path}: no sha256 to check it against. Give `sha256` (or "
            "`sha256_prefix`) for every downloaded file."
        )
    return expected


def download(url, path, sha256=None, sha256_prefix=None, progress=True):
    """Downloads `url` to `path` (atomically) and checks its sha256.

    An existing file at `path` is checked and reused. `file://` URLs work.
    `sha256` or `sha256_prefix` is required (see `verify_sha256`); without
    either, nothing is downloaded.
    """
    _expected_hash(path, sha256, sha256_prefix)
    if os.path.exists(path):
        verify_sha256(path, sha256, sha256_prefix)
        return path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = path + ".part"
    try:
        with (
            urllib.request.urlopen(url, timeout=60) as response,
            open(partial, "wb") as out,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = keras.utils.Progbar(total, unit_name="byte") if progress else None
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                done += len(block)
                if bar is not None:
                    bar.update(done)
    except (urllib.error.URLError, OSError, ValueError) as error:
        if os.path.exists(partial):
            os.remove(partial)
        raise OSError(
            f"Could not download {url} ({error}). Without network access, download "
            f"that file by hand and put it at {path} (the cache folder can be moved "
            f"with ${CACHE_ENV}); it is then checked and used."
        ) from error
    try:
        verify_sha256(partial, sha256, sha256_prefix)
    except ValueError:
        os.remove(partial)
        raise
    shutil.move(partial, path)
    return path
