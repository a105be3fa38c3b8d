"""Bad model files are refused in one line at parse time, before any weight is read, and a changed
model file makes its finished runs stale.

Each case builds its model in tmp_path: tiny random models saved with save_pretrained, small
hand-made GGUF files, or a byte-edited copy of the header of the real SmolLM2 GGUF.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from mech_interp.models.builtin import smollm2_gguf_path
from mech_interp.models.run_options import RunOptions
from mech_interp.models.spec import ModelSpec
from mech_interp.runs.spec import RunSpec, resolve
from mech_interp.validation.errors import UsageError

from .cli_runs import assert_refused, files_under, run_cli

CPU_FAST = ["--device", "cpu", "--n-seqs", "2", "--seq-len", "32"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MECH_INTERP_CACHE", str(tmp_path / "cache"))





@pytest.fixture
def no_weight_loading(monkeypatch):
    """Fails the test if anything tries to read weights: the refusals below happen before."""
    import transformers

    from mech_interp.models import gguf

    def forbidden(*args, **kwargs):
        raise AssertionError("weights were read before the bad model was refused")

    monkeypatch.setattr(gguf, "_dequantize", forbidden)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)


# --- GGUF files ---------------------------------------------------------------------------------

def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _u32(key: str, value: int) -> bytes:
    return _string(key) + struct.pack("<I", 4) + struct.pack("<I", value)


def write_gguf(path: Path, arch: str = "llama", n_tensors: int = 2, **u32: int) -> Path:
    """A well-formed GGUF file: ``general.architecture``, the given uint32 keys under ``<arch>.``,
    and ``n_tensors`` float32 tensors of 4 values each."""
    kv = [_string("general.architecture") + struct.pack("<I", 8) + _string(arch)]
    kv += [_u32(f"{arch}.{key.replace('__', '.')}", value) for key, value in u32.items()]
    head = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(kv)) + b"".join(kv)
    for i in range(n_tensors):
        head += _string(f"blk.{i}.w") + struct.pack("<I", 1) + struct.pack("<Q", 4) + struct.pack("<IQ", 0, 16 * i)
    head += b"\0" * (-len(head) % 32)
    path.write_bytes(head + b"\0" * (16 * n_tensors))
    return path


@pytest.mark.parametrize("count", [0, 4_000_000_000, 10_001])
def test_gguf_with_implausible_block_count_is_refused_before_dequantizing(tmp_path, capsys, no_weight_loading,
                                                                          count):
    path = write_gguf(tmp_path / "m.gguf", block_count=count, context_length=2048)
    out = tmp_path / "out"
    code, _, stderr = run_cli(["layerwise", "--model", path, *CPU_FAST, "--out", out], capsys)
    assert_refused(code, stderr, f"has a corrupt header (llama.block_count is {count}", out)
    assert not (tmp_path / "cache").exists()


def test_gguf_with_zero_context_length_is_refused(tmp_path, no_weight_loading):
    path = write_gguf(tmp_path / "m.gguf", block_count=2, context_length=0)
    with pytest.raises(UsageError, match=r"corrupt header \(llama.context_length is 0"):
        ModelSpec.parse(str(path))
    good = write_gguf(tmp_path / "ok.gguf", block_count=2, context_length=2048)
    assert ModelSpec.parse(str(good)).metadata().n_layers == 2


def test_gguf_with_implausible_tensor_count_is_refused(tmp_path, no_weight_loading):
    path = write_gguf(tmp_path / "m.gguf", block_count=2)
    data = bytearray(path.read_bytes())
    data[8:16] = struct.pack("<Q", 10**15)  # the tensor count
    path.write_bytes(bytes(data))
    with pytest.raises(UsageError, match=r"corrupt header \(.*10{15} tensors: expected at most"):
        ModelSpec.parse(str(path))
    data[8:16] = struct.pack("<Q", 10**6)  # plausible, but more than the file can hold
    path.write_bytes(bytes(data))
    with pytest.raises(UsageError, match=r"is truncated \(\d+ bytes, shorter than its header says"):
        ModelSpec.parse(str(path))
    few = write_gguf(tmp_path / "few.gguf", n_tensors=1, block_count=30)
    with pytest.raises(UsageError, match=r"corrupt header \(1 tensors for 30 blocks\)"):
        ModelSpec.parse(str(few))


def test_real_gguf_with_block_count_edited_to_zero_is_refused_in_one_line(tmp_path, capsys, no_weight_loading):
    """The header of SmolLM2 byte-edited: block_count 30 -> 0. Only the header is copied, with a
    sparse tail of the real size, so the file passes the truncation check."""
    real = smollm2_gguf_path()
    with real.open("rb") as f:
        head = bytearray(f.read(4 << 20))
    key = _string("llama.block_count") + struct.pack("<I", 4)
    at = head.index(key) + len(key)
    assert struct.unpack("<I", head[at:at + 4])[0] == 30
    head[at:at + 4] = struct.pack("<I", 0)
    path = tmp_path / "SmolLM2-broken.gguf"
    with path.open("wb") as f:
        f.write(head)
        f.truncate(real.stat().st_size)
    out = tmp_path / "out"
    code, _, stderr = run_cli(["layerwise", "--model", path, *CPU_FAST, "--out", out], capsys)
    assert_refused(code, stderr, "has a corrupt header (llama.block_count is 0", out)
    assert not (tmp_path / "cache").exists()


def test_unsupported_gguf_architecture_is_refused_at_parse_without_torch(tmp_path):
    path = write_gguf(tmp_path / "mamba.gguf", arch="mamba", block_count=2)
    script = ("import sys\nfrom mech_interp.validation.errors import UsageError\nfrom mech_interp.models.spec import ModelSpec\n"
              f"try:\n    ModelSpec.parse({str(path)!r})\nexcept UsageError as err:\n    print('refused:', err)\n"
              "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[0].startswith("refused: ") and "architecture 'mamba' cannot be loaded" in lines[0], lines
    assert lines[1] == "[]", f"refusing an unsupported GGUF imported {lines[1]}"


# --- the GGUF conversion cache ------------------------------------------------------------------

def test_cache_save_failing_with_safetensor_error_warns_once_and_leaves_nothing(tmp_path, monkeypatch):
    """A full disk under MECH_INTERP_CACHE: safetensors raises its own SafetensorError, not an
    OSError. The loaded model is used, the scratch and the directories the save created are gone."""
    import safetensors
    import torch
    import transformers.modeling_utils

    import mech_interp as mi
    from mech_interp.models import gguf

    cache = tmp_path / "cache" / "deep"
    monkeypatch.setenv("MECH_INTERP_CACHE", str(cache))
    tiny = mi.load_hf("random:gpt2-tiny")
    monkeypatch.setattr(gguf, "_dequantize", lambda p: (tiny.model, tiny.tokenizer))
    written: list[Path] = []

    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 1000)  # what got written before the disk filled up
        written.append(Path(filename))
        raise safetensors.SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", disk_full)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = gguf.load_gguf(smollm2_gguf_path())
    messages = [str(w.message) for w in caught if "could not be cached" in str(w.message)]
    assert len(messages) == 1 and "SafetensorError: " in messages[0] and "No space left" in messages[0], messages
    assert written, "the save was never attempted"
    assert loaded.model is tiny.model
    assert torch.equal(loaded.model.state_dict()["transformer.h.0.attn.c_proj.weight"],
                       tiny.model.state_dict()["transformer.h.0.attn.c_proj.weight"])
    assert not (tmp_path / "cache").exists(), files_under(tmp_path / "cache")


def test_cache_save_failing_keeps_existing_directories(tmp_path, monkeypatch):
    import mech_interp as mi
    from mech_interp.models import gguf

    cache = tmp_path / "cache"
    (cache / "gguf").mkdir(parents=True)
    (cache / "gguf" / "other-entry").mkdir()
    tiny = mi.load_hf("random:gpt2-tiny")
    monkeypatch.setattr(gguf, "_dequantize", lambda p: (tiny.model, tiny.tokenizer))
    monkeypatch.setattr(type(tiny.tokenizer), "save_pretrained",
                        lambda self, d, **kw: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.warns(UserWarning, match="could not be cached .*PermissionError"):
        assert gguf.load_gguf(smollm2_gguf_path()).model is tiny.model
    assert sorted(p.name for p in (cache / "gguf").iterdir()) == ["other-entry"]


# --- Hugging Face directories -------------------------------------------------------------------

def save_tiny(path: Path, name: str = "random:gpt2-tiny", tokenizer: bool = True, **save_kwargs) -> Path:
    import mech_interp as mi

    hf = mi.load_hf(name)
    hf.model.save_pretrained(path, **save_kwargs)
    if tokenizer:
        hf.tokenizer.save_pretrained(path)
    return path


def _edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("name", ["random:gpt2-tiny", "random:llama-tiny"])
def test_hf_directory_without_tokenizer_is_refused_at_parse(tmp_path, capsys, no_weight_loading, name):
    model = save_tiny(tmp_path / "m", name, tokenizer=False)
    out = tmp_path / "out"
    code, _, stderr = run_cli(["layerwise", "--model", model, *CPU_FAST, "--out", out], capsys)
    assert_refused(code, stderr, "has no tokenizer files (tokenizer.json", out)


def test_hf_directory_with_a_slow_tokenizer_only_is_accepted(tmp_path):
    """vocab.json with merges.txt is a complete GPT-2 tokenizer, without tokenizer.json."""
    model = save_tiny(tmp_path / "m")
    (model / "tokenizer.json").unlink()
    with pytest.raises(UsageError, match="has no tokenizer files"):
        ModelSpec.parse(str(model))
    (model / "vocab.json").write_text("{}")
    with pytest.raises(UsageError, match="has no tokenizer files"):
        ModelSpec.parse(str(model))  # tokenizer_config.json and vocab.json, but no merges
    (model / "merges.txt").write_text("#version: 0.2\n")
    assert ModelSpec.parse(str(model)).kind == "hf_dir"


@pytest.mark.parametrize("key, value", [("n_layer", -3), ("n_layer", 0), ("n_layer", "two"), ("n_layer", 2.5),
                                        ("n_layer", True), ("n_positions", 0), ("num_hidden_layers", 0)])
def test_config_with_a_size_that_is_not_a_positive_integer(tmp_path, capsys, no_weight_loading, key, value):
    model = save_tiny(tmp_path / "m")
    _edit_config(model, **{key: value})
    out = tmp_path / "out"
    code, _, stderr = run_cli(["layerwise", "--model", model, *CPU_FAST, "--out", out], capsys)
    assert_refused(code, stderr, f"has a broken config.json ({key} is {value!r}: expected a positive integer)", out)


def test_sharded_directory_with_a_missing_shard_or_broken_index(tmp_path, capsys, no_weight_loading):
    model = save_tiny(tmp_path / "m", max_shard_size="20KB")
    index = json.loads((model / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    assert ModelSpec.parse(str(model)).kind == "hf_dir"  # whole: accepted
    (model / shards[1]).unlink()
    out = tmp_path / "out"
    code, _, stderr = run_cli(["layerwise", "--model", model, *CPU_FAST, "--out", out], capsys)
    assert_refused(code, stderr, f"lacks 1 weight shard(s) named in model.safetensors.index.json (e.g. "
                                 f"{shards[1]!r})", out)
    (model / "model.safetensors.index.json").write_text('{"weight_map": ')
    with pytest.raises(UsageError, match=r"has a broken model.safetensors.index.json \("):
        ModelSpec.parse(str(model))
    (model / "model.safetensors.index.json").write_text('["not", "a", "map"]')
    with pytest.raises(UsageError, match="has a model.safetensors.index.json that is not a JSON object"):
        ModelSpec.parse(str(model))
    (model / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(UsageError, match="has a broken model.safetensors.index.json .no weight_map"):
        ModelSpec.parse(str(model))


def test_config_json_that_is_a_directory(tmp_path, capsys, no_weight_loading):
    model = tmp_path / "m"
    (model / "config.json").mkdir(parents=True)
    out = tmp_path / "out"
    code, _, stderr = run_cli(["layerwise", "--model", model, *CPU_FAST, "--out", out], capsys)
    assert_refused(code, stderr, "config.json is a directory", out)
    assert "has no config.json" not in stderr


# --- a model file replaced in place -------------------------------------------------------------

def test_replacing_the_weights_in_place_reruns_the_finished_run(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model = save_tiny(tmp_path / "m")
    out = tmp_path / "out"
    args = ["layerwise", "--model", model, *CPU_FAST, "--out", out]
    code, stdout, stderr = run_cli(args, capsys)
    run_dir = out / "m" / "layerwise__n_seqs=2__seq_len=32"
    assert code == 0 and f"[done] {run_dir}" in stdout, stderr
    first = json.loads((run_dir / "manifest.json").read_text())
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and f"[skip] {run_dir}" in stdout

    weights = model / "model.safetensors"
    tensors = load_file(weights)
    tensors = {k: v * 2 if v.is_floating_point() else v for k, v in tensors.items()}  # another model
    save_file(tensors, weights, metadata={"format": "pt"})
    os.utime(weights, ns=(first_ns := weights.stat().st_mtime_ns, first_ns + 1_000_000))
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0 and "[skip]" not in stdout, stderr
    assert f"[rerun] {run_dir}: options.model_files was " in stdout and f"[done] {run_dir}" in stdout
    second = json.loads((run_dir / "manifest.json").read_text())
    files = second["identity"]["options"]["model_files"]
    assert set(files) == {"config.json", "model.safetensors"}
    assert files != first["identity"]["options"]["model_files"]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and f"[skip] {run_dir}" in stdout and "[rerun]" not in stdout


def test_identity_fingerprints_local_files_only_and_is_json(tmp_path):
    gguf_file = write_gguf(tmp_path / "m.gguf", block_count=2)
    spec = RunSpec("layerwise", RunOptions(model=str(gguf_file)))
    before = resolve(spec).identity
    assert json.loads(json.dumps(before)) == before
    assert list(before["options"]["model_files"]) == ["m.gguf"]
    stat = gguf_file.stat()
    os.utime(gguf_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert resolve(spec).identity != before
    assert resolve(spec).identity == resolve(spec).identity
    registered = resolve(RunSpec("layerwise", RunOptions(model="random:gpt2-tiny"))).identity
    assert "model_files" not in registered["options"]
    assert json.loads(json.dumps(registered)) == registered
