"""Bad input and faults, as a hostile user would try them: each is refused early, in one line
``mech-interp: error: ...`` naming the value, with exit status 2, and leaves nothing behind.

Most cases run ``cli.main`` in-process (fast); Ctrl-C, ``--help`` and the console script run in
a subprocess because what they promise is about the process.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mech_interp.models.builtin import smollm2_gguf_path
from mech_interp.models.run_options import RunOptions
from mech_interp.runs.spec import RunSpec, resolve

from .cli_runs import assert_refused, files_under, run_cli

TINY = ["--model", "random:gpt2-tiny", "--device", "cpu"]
FAST = ["--n-seqs", "2", "--seq-len", "32"]
ROOT = Path(__file__).resolve().parent.parent




def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid



# --- files the cases below use, built in tmp_path by name -----------------------------------------

def _truncated_gguf(p: Path) -> None:
    with smollm2_gguf_path().open("rb") as f:
        p.write_bytes(f.read(1000))


def _hf_dir(p: Path, config: str | None) -> None:
    p.mkdir()
    if config is not None:
        (p / "config.json").write_text(config)


def _wikitext_mirror(p: Path, content: bytes) -> None:
    raw = p / "wikitext-2-raw" / "wiki.test.raw"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(content)


def _batch(p: Path, text: str) -> None:
    p.write_text(text)


RUNS3 = ("[defaults]\ndevice = 'cpu'\n"
         "[[runs]]\nmodels = ['random:gpt2-tiny']\nexperiments = ['feature_view']\n"
         "[[runs]]\nmodels = ['random:gpt2-tiny']\nexperiments = ['attention']\n"
         "[[runs]]\nmodels = ['no-such-model']\nexperiments = ['feature_view']\n")


def _entry(extra: str, experiment: str = "feature_view") -> str:
    return f"[defaults]\ndevice = 'cpu'\n[[runs]]\nmodels = ['random:gpt2-tiny']\nexperiments = ['{experiment}']\n{extra}\n"


# (id, setup(tmp) -> None, args with {tmp} placeholders, expected substring of the one error line)
CASES = [
    ("not-a-gguf", lambda t: (t / "x.gguf").write_text("hello"),
     ["layerwise", "--model", "{tmp}/x.gguf"], "is not a GGUF file (it starts with b'hell'"),
    ("empty-gguf", lambda t: (t / "e.gguf").write_bytes(b""),
     ["layerwise", "--model", "{tmp}/e.gguf"], "the file is empty"),
    ("truncated-gguf", lambda t: _truncated_gguf(t / "cut.gguf"),
     ["layerwise", "--model", "{tmp}/cut.gguf"], "is truncated (1000 bytes"),
    ("gguf-is-a-directory", lambda t: (t / "d.gguf").mkdir(),
     ["layerwise", "--model", "{tmp}/d.gguf"], "is a directory"),
    ("hf-broken-config", lambda t: _hf_dir(t / "m", "{broken"),
     ["layerwise", "--model", "{tmp}/m"], "has a broken config.json"),
    ("hf-no-config", lambda t: _hf_dir(t / "m", None),
     ["layerwise", "--model", "{tmp}/m"], "has no config.json"),
    ("hf-no-weights", lambda t: _hf_dir(t / "m", '{"architectures": ["GPT2LMHeadModel"], "n_layer": 2}'),
     ["layerwise", "--model", "{tmp}/m"], "has no weights"),
    ("hf-unsupported", lambda t: _hf_dir(t / "m", '{"architectures": ["BertForMaskedLM"]}'),
     ["layerwise", "--model", "{tmp}/m"], "architecture 'BertForMaskedLM' cannot be loaded"),
    ("empty-model", None, ["layerwise", "--model", ""], "empty model name ''"),
    ("unknown-model", None, ["layerwise", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    ("k-beyond-hidden-state", None, ["layerwise", *TINY, *FAST, "--k", "100000"],
     "--k 100000 is larger than the 2048 entries"),
    ("seed-beyond-64-bits", None, ["layerwise", *TINY, "--seed", str(2**64)], f"--seed {2**64} is not allowed"),
    ("seed-negative", None, ["layerwise", *TINY, "--seed", "-1"], "--seed -1 is not allowed"),
    ("prompt-beyond-context", None, ["feature-view", *TINY, "--prompt", "a" * 600],
     "--prompt is 600 tokens long, longer than the model's context of 512"),
    ("attention-prompt-beyond-context", None, ["attention", *TINY, "--prompt", "a" * 600], "longer than the model's context"),
    ("seq-len-beyond-context", None, ["layerwise", *TINY, "--seq-len", "600"],
     "--seq-len 600 is longer than the model's context of 512"),
    ("device-mps", None, ["layerwise", "--model", "random:gpt2-tiny", "--device", "mps"], "device 'mps'"),
    ("device-cuda-7", None, ["layerwise", "--model", "random:gpt2-tiny", "--device", "cuda:7"], "device 'cuda:7'"),
    ("device-unknown", None, ["layerwise", "--model", "random:gpt2-tiny", "--device", "gpu"], "unknown device 'gpu'"),
    ("text-is-a-directory", lambda t: (t / "texts").mkdir(),
     ["layerwise", *TINY, "--text", "{tmp}/texts"], "text file '{tmp}/texts' is a directory"),
    ("text-not-utf8", lambda t: (t / "latin.txt").write_bytes("caf\xe9 ol\xe9. ".encode("latin-1") * 100),
     ["layerwise", *TINY, "--text", "{tmp}/latin.txt"], "is not UTF-8 (byte 0xe9 at offset 3)"),
    ("text-empty", lambda t: (t / "empty.txt").write_text(" \n"),
     ["layerwise", *TINY, "--text", "{tmp}/empty.txt"], "text file '{tmp}/empty.txt' is empty"),
    ("mirror-empty", lambda t: _wikitext_mirror(t / "data", b""),
     ["layerwise", *TINY, "--text", "wikitext2"], "data file '{tmp}/data/wikitext-2-raw/wiki.test.raw' is empty"),
    ("mirror-not-utf8", lambda t: _wikitext_mirror(t / "data", b" = T = \n caf\xe9 \n"),
     ["intervention", *TINY, "--datasets", "wikitext2"], "wiki.test.raw' is not UTF-8"),
    ("out-empty", None, ["layerwise", *TINY, "--out", ""], "--out '' is not allowed"),
    ("out-dot", None, ["layerwise", *TINY, "--out", "."], "--out '.' is not allowed"),
    ("out-is-a-file", lambda t: (t / "afile").write_text("x"),
     ["layerwise", *TINY, "--out", "{tmp}/afile/results"], "'{tmp}/afile' is a file, not a directory"),
    ("study-missing-dataset", None, ["study", *TINY, "--datasets", "missing.txt"], "text file 'missing.txt' does not exist"),
    ("batch-layers-abc", lambda t: _batch(t / "b.toml", _entry("layers = 'abc'")),
     ["batch", "{tmp}/b.toml"], "runs[0].layers: 'abc' is not a 0-based block index"),
    ("batch-layers-float", lambda t: _batch(t / "b.toml", _entry("layers = [1.5]")),
     ["batch", "{tmp}/b.toml"], "runs[0].layers: 1.5 is not a 0-based block index"),
    ("batch-layers-99", lambda t: _batch(t / "b.toml", _entry("layers = [1, 99]")),
     ["batch", "{tmp}/b.toml"], "layer 99 out of range for 'random:gpt2-tiny'"),
    ("batch-min-abs-string", lambda t: _batch(t / "b.toml", _entry("options = { min_abs = 'big' }")),
     ["batch", "{tmp}/b.toml"], "--min-abs 'big' is not allowed"),
    ("batch-prepend-bos-string", lambda t: _batch(t / "b.toml", _entry("options = { prepend_bos = 'no' }")),
     ["batch", "{tmp}/b.toml"], "--prepend-bos 'no' is not allowed"),
    ("batch-n-seqs-string", lambda t: _batch(t / "b.toml", _entry("params = { n_seqs = '3' }", "layerwise")),
     ["batch", "{tmp}/b.toml"], "--n-seqs '3' is not allowed"),
    ("batch-resets-string", lambda t: _batch(t / "b.toml", _entry("params = { resets = 'set_zero' }", "intervention")),
     ["batch", "{tmp}/b.toml"], "--resets 'set_zero' is not allowed: expected a list of set_zero, set_mean"),
    ("batch-model-number", lambda t: _batch(t / "b.toml", "[[runs]]\nmodels = [3]\nexperiments = ['layerwise']\n"),
     ["batch", "{tmp}/b.toml"], "models and experiments are names"),
    ("batch-third-model-unknown", lambda t: _batch(t / "b.toml", RUNS3),
     ["batch", "{tmp}/b.toml"], "runs[2]: unknown model 'no-such-model'"),
    ("batch-missing-text", lambda t: _batch(t / "b.toml", _entry("params = { text = 'missing.txt' }", "layerwise")),
     ["batch", "{tmp}/b.toml"], "text file 'missing.txt' does not exist"),
    ("batch-device-mps", lambda t: _batch(t / "b.yaml", "defaults: {device: mps}\nruns:\n  - experiments: [layerwise]\n"
                                                          "    models: [random:gpt2-tiny]\n"),
     ["batch", "{tmp}/b.yaml"], "device 'mps'"),
    ("batch-not-utf8", lambda t: (t / "b.toml").write_bytes(b"# caf\xe9\n[[runs]]\nexperiments = ['layerwise']\n"),
     ["batch", "{tmp}/b.toml"], "not UTF-8 (byte 0xe9 at offset 5)"),
    ("batch-is-a-directory", lambda t: (t / "b.toml").mkdir(), ["batch", "{tmp}/b.toml"], "is a directory"),
    # found by the second audit
    ("batch-size-beyond-int", None, ["layerwise", *TINY, *FAST, "--batch-size", "99999999999999999999"],
     "--batch-size 99999999999999999999 is not allowed: expected an integer 1..2147483647"),
    ("datasets-repeated", None, ["intervention", *TINY, "--datasets", "builtin,builtin"], "--datasets names 'builtin' twice"),
    ("resets-repeated", None, ["intervention", *TINY, "--resets", "set_zero,set_zero"], "--resets names 'set_zero' twice"),
    ("layer-negative", None, ["feature-view", *TINY, "--layer", "-1"], "layer -1 out of range: expected a 0-based block"),
    ("batch-layers-negative", lambda t: _batch(t / "b.toml", _entry("layers = [-1]")),
     ["batch", "{tmp}/b.toml"], "runs[0].layers: -1 is not a 0-based block index"),
    ("batch-layers-for-no-layer", lambda t: _batch(t / "b.toml", _entry("layers = [1]", "layerwise")),
     ["batch", "{tmp}/b.toml"], "runs[0].layers given, but none of layerwise takes a layer"),
    ("batch-layers-and-params-layer", lambda t: _batch(t / "b.toml", _entry("layers = [1]\nparams = { layer = 2 }")),
     ["batch", "{tmp}/b.toml"], "both layers and params.layer given"),
    ("batch-yaml-runs-twice", lambda t: _batch(t / "b.yaml", "runs:\n  - experiments: [layerwise]\n"
                                                             "runs:\n  - experiments: [feature_view]\n"),
     ["batch", "{tmp}/b.yaml"], "key 'runs' is given twice (line 3)"),
    ("hub-text-without-name", None, ["intervention", *TINY, "--datasets", "hf:"], "text 'hf:' is not allowed"),
    ("hub-text-extra-part", None, ["layerwise", *TINY, "--text", "hf:x:c:s:extra"], "text 'hf:x:c:s:extra' is not allowed"),
    ("text-dev-null", None, ["layerwise", *TINY, "--text", "/dev/null"], "text file '/dev/null' is not a regular file"),
    ("text-fifo", lambda t: os.mkfifo(t / "pipe"), ["layerwise", *TINY, "--text", "{tmp}/pipe"], "is not a regular file"),
    ("hooks-beyond-model", None, ["layerwise", *TINY, "--hooks", "blocks.9.hook_resid_post"],
     "hook point 'blocks.9.hook_resid_post' is out of range for 'random:gpt2-tiny'"),
    ("hooks-empty", None, ["layerwise", *TINY, "--hooks", ","], "--hooks [] is not allowed: expected one or more hook point"),
    ("attention-one-token", None, ["attention", *TINY, "--prompt", "a"], "is 1 token long"),
    ("argparse-bad-int", None, ["layerwise", "--n-seqs", "abc"], "layerwise: argument --n-seqs: invalid int value: 'abc'"),
]


# Values of the wrong type: the test run's beartype hook (pyproject addopts) would refuse them in the
# dataclass constructors before the checks users meet, so these run as users run them, in a subprocess.
WRONG_TYPES = {"batch-layers-abc", "batch-layers-float", "batch-min-abs-string", "batch-prepend-bos-string",
               "batch-n-seqs-string", "batch-resets-string"}


@pytest.mark.parametrize("case_id, setup, args, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line(tmp_path, capsys, monkeypatch, case_id, setup, args, needle):
    if setup is not None:
        setup(tmp_path)
    monkeypatch.setenv("MECH_INTERP_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # nothing may be written into the working directory either
    out = tmp_path / "results"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args:
        args = [*args, "--out", str(out)]
    before = {p for p in tmp_path.rglob("*")}
    if case_id in WRONG_TYPES:
        proc = subprocess.run([sys.executable, "-m", "mech_interp.cli", *args], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        code, stdout, stderr = run_cli(args, capsys)
    assert_refused(code, stderr, needle.replace("{tmp}", str(tmp_path)), out)
    assert {p for p in tmp_path.rglob("*")} == before, "a refused run created files"
    assert "[done]" not in stdout


# --- issue 15: crafted files and addresses, refused in one line before any model is built ---------------

def _gguf(p: Path, fields: list[tuple[str, int, bytes]]) -> None:
    """A GGUF v3 header with no tensors and the given (key, value type, packed value) pairs."""
    import struct

    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text.encode())) + text.encode()

    body = b"".join(string(key) + struct.pack("<I", kind) + value for key, kind, value in fields)
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(fields)) + body)


def _gguf_string(text: str) -> bytes:
    import struct

    return struct.pack("<Q", len(text.encode())) + text.encode()


def _gguf_alignment(p: Path, kind: int, value: bytes) -> None:
    _gguf(p, [("general.architecture", 8, _gguf_string("llama")), ("general.alignment", kind, value)])


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound, then closed: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RAY_BATCH = "[defaults]\ndevice = 'cpu'\n[[runs]]\nmodels = ['random:gpt2-tiny']\nexperiments = ['feature_view']\n"
DEEP = 100_000  # far past Python's recursion limit: the parsers raised RecursionError
DEEP_TOML = "runs = " + "[" * DEEP + "]" * DEEP + "\n"
DEEP_YAML = "runs: " + "[" * DEEP + "]" * DEEP + "\n"
NESTED_40 = "[defaults]\ndevice = 'cpu'\n[[runs]]\nmodels = ['random:gpt2-tiny']\nexperiments = ['feature_view']\n" \
            "params = { prompt = " + "[" * 40 + "'x'" + "]" * 40 + " }\n"

# 10^8 leaves when expanded, 9 levels deep: the nesting check walked every one (it hung); with the anchors inside a
# value the depth check passes and the refusal printed the value expanded. Each shared node is now walked once.
LAUGHS = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)) + "runs: *a8\n"
INLINE_LAUGHS = ("runs:\n  - models: [random:gpt2-tiny]\n    experiments: [feature_view]\n    params: {prompt: [&b0 ["
                 + ", ".join(["x"] * 10) + "], " + ", ".join(
                     f"&b{i} [{', '.join([f'*b{i - 1}'] * 10)}]" for i in range(1, 9)) + "]}\n")

# (id, setup(tmp) -> None, args with {tmp} placeholders, environment, expected substring of the one error line)
HOSTILE = [
    ("batch-toml-nested-100000", lambda t: _batch(t / "b.toml", DEEP_TOML), ["batch", "{tmp}/b.toml"], {},
     "config file '{tmp}/b.toml' nests lists or tables deeper than 32 levels"),
    ("batch-yaml-nested-100000", lambda t: _batch(t / "b.yaml", DEEP_YAML), ["batch", "{tmp}/b.yaml"], {},
     "config file '{tmp}/b.yaml' nests lists or tables deeper than 32 levels"),
    ("batch-toml-nested-40", lambda t: _batch(t / "b.toml", NESTED_40), ["batch", "{tmp}/b.toml"], {},
     "nests lists or tables deeper than 32 levels: expected at most 32"),
    ("batch-yaml-alias-in-its-anchor", lambda t: _batch(t / "b.yaml", "runs: &a [*a]\n"), ["batch", "{tmp}/b.yaml"], {},
     "config file '{tmp}/b.yaml' contains itself (a YAML alias inside its own anchor)"),
    ("batch-yaml-billion-laughs", lambda t: _batch(t / "b.yaml", LAUGHS), ["batch", "{tmp}/b.yaml"], {},
     "config file '{tmp}/b.yaml' expands to 2345679011 values (aliases repeat what they name): expected at most 1000000"),
    ("batch-yaml-billion-laughs-inline", lambda t: _batch(t / "b.yaml", INLINE_LAUGHS), ["batch", "{tmp}/b.yaml"], {},
     "config file '{tmp}/b.yaml' expands to 1234567908 values (aliases repeat what they name): expected at most 1000000"),
    ("hf-config-nested-100000", lambda t: _hf_dir(t / "m", '{"a": ' + "[" * DEEP + "]" * DEEP + "}"),
     ["layerwise", "--model", "{tmp}/m"], {}, "model directory '{tmp}/m': config.json nests lists or tables deeper"),
    ("gguf-alignment-string", lambda t: _gguf_alignment(t / "a.gguf", 8, _gguf_string("32")),
     ["layerwise", "--model", "{tmp}/a.gguf"], {}, "has a corrupt header (general.alignment is '32': expected a "
                                                  "positive multiple of 8)"),
    ("gguf-alignment-zero", lambda t: _gguf_alignment(t / "a.gguf", 4, (0).to_bytes(4, "little")),
     ["layerwise", "--model", "{tmp}/a.gguf"], {}, "general.alignment is 0: expected a positive multiple of 8"),
    ("gguf-alignment-float", lambda t: _gguf_alignment(t / "a.gguf", 6, b"\x00\x00\x00\x42"),
     ["layerwise", "--model", "{tmp}/a.gguf"], {}, "general.alignment is 32.0: expected a positive multiple of 8"),
    ("ray-address-closed-port", lambda t: _batch(t / "b.toml", RAY_BATCH),
     ["batch", "{tmp}/b.toml", "--backend", "ray", "--address", "127.0.0.1:{port}"], {},
     "--address 127.0.0.1:{port}: no Ray cluster answers there (connection refused)"),
    ("ray-env-address-closed-port", lambda t: _batch(t / "b.toml", RAY_BATCH),
     ["batch", "{tmp}/b.toml", "--backend", "ray"], {"RAY_ADDRESS": "127.0.0.1:{port}"},
     "RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers there (connection refused)"),
    ("ray-client-not-installed", lambda t: _batch(t / "b.toml", RAY_BATCH),
     ["batch", "{tmp}/b.toml", "--backend", "ray", "--address", "ray://127.0.0.1:{port}"], {},
     "a ray:// address goes through Ray Client, which is not installed: pip install 'ray[client]'"),
    ("ray-env-address-garbage", lambda t: _batch(t / "b.toml", RAY_BATCH),
     ["batch", "{tmp}/b.toml", "--backend", "ray"], {"RAY_ADDRESS": "garbage!!"},
     "RAY_ADDRESS='garbage!!' is not allowed: expected auto, HOST:PORT or ray://HOST:PORT"),
]


@pytest.mark.unit  # every case is refused before a model is built or a Ray session starts
@pytest.mark.parametrize("case_id, setup, args, env, needle", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_crafted_files_and_addresses_are_refused_in_one_line(tmp_path, capsys, monkeypatch, case_id, setup, args,
                                                              env, needle):
    import importlib.util

    if case_id.startswith("ray-") and importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (the [ray] extra)")
    if case_id == "ray-client-not-installed" and importlib.util.find_spec("grpc") is not None:
        pytest.skip("ray[client] is installed here")
    setup(tmp_path)
    port = str(_closed_port())
    fill = lambda text: text.replace("{tmp}", str(tmp_path)).replace("{port}", port)  # noqa: E731
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, fill(value))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results"
    before = {p for p in tmp_path.rglob("*")}
    code, stdout, stderr = run_cli([*map(fill, args), "--out", str(out)], capsys)
    assert_refused(code, stderr, fill(needle), out)
    assert {p for p in tmp_path.rglob("*")} == before, "a refused run created files"


@pytest.mark.parametrize("manifest", [
    "[" * DEEP + "]" * DEEP, "[" * 40 + "]" * 40, "[1, 2]", '{"identity": [1]}', '{"identity": {"options": "x"}}',
    '{"identity": {"options": {"model": ["random:gpt2-tiny"]}}}',
], ids=["deep-100000", "deep-40", "a-list", "identity-a-list", "options-a-string", "model-a-list"])
def test_a_crafted_manifest_in_a_run_directory_is_a_stale_run(tmp_path, capsys, manifest):
    """Skip/resume reads the manifests under --out: one that no run of ours wrote is recomputed (its model named
    as a list: refused as another model's run), never a traceback."""
    out = tmp_path / "results"
    run_dir = out / "random-gpt2-tiny" / "layerwise__n_seqs=2__seq_len=32"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(manifest)
    code, stdout, stderr = run_cli(["layerwise", *TINY, *FAST, "--out", out], capsys)
    assert "Traceback" not in stderr
    if "model" in manifest:
        assert code == 2 and stderr.strip().splitlines() == [
            f"mech-interp: error: {run_dir} holds a run of ['random:gpt2-tiny'], not 'random:gpt2-tiny': pass another "
            "--out, or --force to replace it"]
    else:
        assert code == 0, stderr
        assert json.loads((run_dir / "manifest.json").read_text())["config"]["n_seqs"] == 2  # recomputed and replaced


def test_no_command_is_one_line_on_stderr(capsys):
    code, stdout, stderr = run_cli([], capsys)
    assert code == 2 and not stdout
    assert stderr.strip().splitlines() == [
        "mech-interp: error: no command given: expected one of study, feature-view, layerwise, intervention, "
        "attention, head-scores, head-ablation, head-sweep, head-cumulative, attribution, head-3d, super-weights, "
        "sink-window, emergence, batch, models, report, plan "
        "(mech-interp --help explains each)"]


def _hf_weights_damaged(t: Path, how: str) -> None:
    import mech_interp as mi

    target = t / "m"
    hf = mi.load_hf("random:gpt2-tiny")
    hf.model.save_pretrained(target)
    hf.tokenizer.save_pretrained(target)
    weights = target / "model.safetensors"
    if how == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif how == "custom-code":  # transformers would import evil.py (after a prompt at a terminal)
        config = json.loads((target / "config.json").read_text())
        config.update(model_type="evilgpt", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"})
        (target / "config.json").write_text(json.dumps(config))
        (target / "evil.py").write_text(f"from pathlib import Path\nPath({str(t / 'payload-ran')!r}).touch()\n"
                                        "from transformers import GPT2Config as EvilConfig, GPT2LMHeadModel as EvilModel\n")
    elif how == "pickled-code":  # a .bin whose unpickling would run a command
        import torch

        weights.unlink()
        torch.save({"w": _Payload(t / "payload-ran")}, target / "pytorch_model.bin")
    else:  # one tensor missing: transformers would initialise it at random and carry on
        from safetensors.torch import load_file, save_file

        tensors = load_file(weights)
        tensors.pop("transformer.h.0.attn.c_proj.weight")
        save_file(tensors, weights, metadata={"format": "pt"})


class _Payload:
    def __init__(self, witness: Path):
        self.witness = witness

    def __reduce__(self):
        return (Path.touch, (self.witness,))


@pytest.mark.parametrize("how, needle", [
    ("truncated", "cannot load the model directory '{tmp}/m' (SafetensorError"),
    ("custom-code", "model directory '{tmp}/m' needs code of its own to load (config.json's auto_map): refused; only "
                    "transformers' built-in architectures are loaded"),
    ("pickled-code", "model directory '{tmp}/m' holds pickled weights that need code to load: refused; accepted "
                     "weights are *.safetensors, or *.bin state dicts of tensors only"),
    ("missing-tensor", "lacks weights for 1 tensors (e.g. 'transformer.h.0.attn.c_proj.weight')"),
])
def test_hf_directory_with_damaged_weights(tmp_path, capsys, how, needle):
    _hf_weights_damaged(tmp_path, how)
    out = tmp_path / "results"
    code, _, stderr = run_cli(["layerwise", "--model", tmp_path / "m", "--device", "cpu", *FAST, "--out", out], capsys)
    assert_refused(code, stderr, needle.replace("{tmp}", str(tmp_path)), out)
    assert not (tmp_path / "payload-ran").exists()


def test_help_of_every_subcommand_imports_no_torch_and_is_fast():
    code = (
        "import sys, time\n"
        "start = time.perf_counter()\n"
        "from mech_interp import cli\n"
        "for command in [[], ['study'], ['feature-view'], ['layerwise'], ['intervention'], ['attention'],\n"
        "                ['batch'], ['models'], ['report']]:\n"
        "    try:\n"
        "        cli.main([*command, '--help'])\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, (command, exit.code)\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'transformer_lens', 'pandas', 'plotly', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy, 'SECONDS', time.perf_counter() - start)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    heavy, seconds = proc.stdout.split("HEAVY ")[1].split(" SECONDS ")
    assert heavy == "[]", f"--help imported {heavy}"
    assert float(seconds) < 2.0
    assert "--n-seqs" in proc.stdout and "--resets" in proc.stdout and "--datasets" in proc.stdout


def test_ctrl_c_prints_one_line_exits_130_and_leaves_nothing(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The river runs to the sea. " * 40_000)  # ~1 M byte tokens: far more than the run needs
    out = tmp_path / "results"
    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mech_interp.cli", "layerwise", "--model", "random:llama-tiny", "--device", "cpu",
             "--text", str(corpus), "--n-seqs", "2000", "--seq-len", "256", "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
            # as at a terminal: a suite started in the background (`make test &`) ignores SIGINT, and Python then
            # installs no KeyboardInterrupt handler in the processes it starts
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 240
        while "layer statistics" not in stderr_file.read_text() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, stderr_file.read_text()  # still computing when interrupted
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    text = stderr_file.read_text()
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert text.rstrip().splitlines()[-1].startswith("mech-interp: interrupted"), text
    assert len([line for line in text.splitlines() if line.startswith("mech-interp:")]) == 1
    assert not files_under(out) and not (out.exists() and any(out.iterdir())), list(out.rglob("*"))


def test_two_runs_writing_the_same_run_directory(tmp_path, capsys):
    out = tmp_path / "results"
    spec = resolve(RunSpec("layerwise", RunOptions(model="random:gpt2-tiny", device="cpu"), {"n_seqs": 2, "seq_len": 32}))
    # The first writer is another process holding the run's lock.
    partial = spec.run_dir(out).with_name(spec.run_dir(out).name + ".partial")
    partial.mkdir(parents=True)
    hold = (f"import fcntl, os, time\nfd = os.open({str(partial)!r}, os.O_RDONLY)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, stdout, stderr = run_cli(["layerwise", *TINY, *FAST, "--out", out], capsys)
        assert code == 2 and stderr.strip().splitlines() == [
            f"mech-interp: error: another process is writing {spec.run_dir(out)}: wait for it, or pass another --out"]
        assert "[done]" not in stdout and not spec.run_dir(out).exists() and not files_under(out)
    finally:
        holder.kill()
        holder.wait()
    # Once the other writer is gone, the same command runs.
    code, stdout, _ = run_cli(["layerwise", *TINY, *FAST, "--out", out], capsys)
    assert code == 0 and (spec.run_dir(out) / "manifest.json").is_file() and not partial.exists()


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_disk_full_or_read_only_while_writing(tmp_path, capsys, monkeypatch, err):
    from mech_interp.runs import output

    def fails(self, name, df):
        raise OSError(err, os.strerror(err), str(self.partial / name))

    monkeypatch.setattr(output.RunWriter, "table", fails)
    out = tmp_path / "results"
    code, _, stderr = run_cli(["layerwise", *TINY, *FAST, "--out", out], capsys)
    assert_refused(code, stderr, f"cannot write results under {str(out)!r}: {os.strerror(err)}", out)
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))  # no empty model directory either


def test_read_only_out(tmp_path, capsys):
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        code, _, stderr = run_cli(["layerwise", *TINY, *FAST, "--out", locked / "results"], capsys)
        assert_refused(code, stderr, f"'{locked}' is not writable", locked)
    # Places no process can write into, root included (CI runs as root): a read-only kernel file
    # system, and one that refuses new entries outright.
    for place in (Path("/sys/mi_results"), Path("/proc/mi_results")):
        if not place.parent.is_dir():
            continue
        code, _, stderr = run_cli(["layerwise", *TINY, *FAST, "--out", place], capsys)
        assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
        assert stderr.startswith(f"mech-interp: error: cannot write results under {str(place)!r}: "), stderr


def _seed_cache(monkeypatch, cache: Path):
    """A cache entry for the real SmolLM2 GGUF holding a tiny GPT-2 (so loading it is instant and
    recognisable), and a stub for the slow dequantizing step that records its calls."""
    import mech_interp as mi
    from mech_interp.models import gguf
    from mech_interp.storage.cache_root import cached_conversion

    monkeypatch.setenv("MECH_INTERP_CACHE", str(cache))
    path = smollm2_gguf_path()
    entry = cached_conversion(path, "gguf")
    hf = mi.load_hf("random:gpt2-tiny")
    hf.model.save_pretrained(entry)
    hf.tokenizer.save_pretrained(entry)
    calls: list[Path] = []

    def dequantize(p):
        calls.append(p)
        fresh = mi.load_hf("random:gpt2-tiny")
        return fresh.model, fresh.tokenizer

    monkeypatch.setattr(gguf, "_dequantize", dequantize)
    return path, entry, hf, calls


def test_damaged_cache_entry_is_rebuilt_never_half_loaded(tmp_path, monkeypatch):
    import torch

    from mech_interp.models import gguf

    path, entry, hf, calls = _seed_cache(monkeypatch, tmp_path / "cache")
    # The scratch of a conversion whose process was killed is removed by the next load.
    stale = entry.with_name(f"{entry.name}.{dead_pid()}.tmp")
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 4096)
    reference = hf.model.state_dict()["transformer.h.0.attn.c_proj.weight"]
    loaded = gguf.load_gguf(path)
    assert calls == [] and not stale.exists()
    assert torch.equal(loaded.model.state_dict()["transformer.h.0.attn.c_proj.weight"], reference)

    from safetensors.torch import load_file, save_file

    weights = entry / "model.safetensors"
    tensors = load_file(weights)
    tensors.pop("transformer.h.0.attn.c_proj.weight")  # a partial entry: random init would pass for the model
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.warns(UserWarning, match="was damaged .*missing_keys.*rebuilding it"):
        gguf.load_gguf(path)
    assert calls == [path]
    assert "transformer.h.0.attn.c_proj.weight" in load_file(entry / "model.safetensors")  # rewritten whole

    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match="was damaged"):
        gguf.load_gguf(path)
    assert calls == [path, path]


def test_damaged_cache_entry_that_cannot_be_removed_fails_in_one_line(tmp_path, capsys, monkeypatch):
    from mech_interp.models import gguf

    path, entry, _, calls = _seed_cache(monkeypatch, tmp_path / "cache")
    (entry / "config.json").write_text("{damaged")
    monkeypatch.setattr(gguf.shutil, "rmtree", lambda *a, **k: None)  # as on a read-only cache
    out = tmp_path / "results"
    code, _, stderr = run_cli(["layerwise", "--model", "smollm2-135m", "--device", "cpu", *FAST, "--out", out], capsys)
    assert_refused(code, stderr, f"the cached conversion {str(entry)!r} of {str(path)!r} is damaged", out)
    assert f"delete it (rm -r {str(entry)!r}) or set MECH_INTERP_CACHE=off" in stderr and calls == []


def test_stale_scratch_of_killed_writers_is_removed(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "plotly.min.js").write_text("// complete")
    stale = out / f"plotly.min.js.{dead_pid()}.tmp"
    stale.write_text("// cut short by a kill")
    alive = out / f"plotly.min.js.{os.getpid()}.tmp"  # a live writer's scratch is left alone
    alive.write_text("// being written")
    model_dir = out / "random-gpt2-tiny"
    dead = model_dir / "feature_view__layer=1.partial"  # killed before it saved anything resumable
    dead.mkdir(parents=True)
    (dead / "activations.csv").write_text("half a table")
    resumable = model_dir / "intervention.partial"
    (resumable / "pieces").mkdir(parents=True)
    held = model_dir / "attention.partial"  # another process is writing it right now
    held.mkdir()
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        code, _, stderr = run_cli(["layerwise", *TINY, *FAST, "--out", out], capsys)
    finally:
        os.close(fd)
    assert code == 0, stderr
    assert not stale.exists() and alive.exists()
    assert not dead.exists() and resumable.is_dir() and held.is_dir()


def test_a_changed_default_reruns_and_says_why(tmp_path, capsys, monkeypatch):
    """A finished run counts as done only if its whole resolved configuration, defaults included,
    equals the requested one: after a default changes, the same command reruns it."""
    import dataclasses

    from mech_interp.runs.studies import get_study
    from mech_interp.studies.lm.configs import LayerwiseConfig

    out = tmp_path / "results"
    args = ["layerwise", *TINY, *FAST, "--out", out]
    code, stdout, _ = run_cli(args, capsys)
    run_dir = out / "random-gpt2-tiny" / "layerwise__n_seqs=2__seq_len=32"
    assert code == 0 and f"[done] {run_dir}" in stdout
    assert json.loads((run_dir / "manifest.json").read_text())["config"]["k"] == 3

    @dataclasses.dataclass
    class NewDefault(LayerwiseConfig):
        k: int = 2  # the default of a parameter nobody passed changes

    lm = get_study("lm")
    monkeypatch.setitem(lm.experiments, "layerwise", dataclasses.replace(lm.experiments["layerwise"], config_cls=NewDefault))
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "[skip]" not in stdout
    assert f"[rerun] {run_dir}: config.k was 3, now 2" in stdout and f"[done] {run_dir}" in stdout
    assert json.loads((run_dir / "manifest.json").read_text())["config"]["k"] == 2
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and f"[skip] {run_dir}" in stdout and "[rerun]" not in stdout


def test_text_paths_with_directories_spaces_and_unicode(tmp_path, capsys, monkeypatch):
    """Any path works wherever a text is accepted: relative with '..', spaces, non-ASCII; a list
    with spaces after commas; nothing is written beside the texts, only under --out."""
    import pandas as pd

    corpus_dir = tmp_path / "my texts"
    corpus_dir.mkdir()
    corpus = corpus_dir / "my corpus ü.txt"
    corpus.write_text("Hello there. How are you today? Fine. The river runs to the sea. " * 60, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    relative = os.path.join("..", "my texts", "my corpus ü.txt")
    out = tmp_path / "results"
    common = ["--model", "planted:gpt2-tiny", "--device", "cpu", "--out", out]
    code, stdout, stderr = run_cli(["intervention", *common, "--datasets", f"builtin, {relative}", "--n-windows", "2",
                                    "--seq-len", "128", "--n-mean-seqs", "4"], capsys)
    assert code == 0, stderr
    run_dir = Path(stdout.split("[done] ")[1].split("\n")[0])
    assert run_dir.parent == out / "planted-gpt2-tiny" and run_dir.name.isascii()
    long = pd.read_csv(run_dir / "perplexity_long.csv")
    assert set(long["dataset"]) == {"builtin", relative}
    assert (long["status"] == "ok").all() and set(long[long["dataset"] == relative]["origin"]) == {str(corpus.resolve())}
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"]["datasets"] == ["builtin", relative]
    code, stdout, stderr = run_cli(["layerwise", *common, "--text", str(corpus), *FAST], capsys)
    assert code == 0, stderr
    assert "my corpus ü.txt" in (Path(stdout.split("[done] ")[1].split("\n")[0]) / "summary.txt").read_text(encoding="utf-8")
    assert sorted(p.name for p in corpus_dir.iterdir()) == ["my corpus ü.txt"] and not any(work.iterdir())


@pytest.fixture
def tiny_hf_dir(tmp_path):
    import mech_interp as mi

    target = tmp_path / "gpt2-tiny-local"
    hf = mi.load_hf("random:gpt2-tiny")
    hf.model.save_pretrained(target)
    hf.tokenizer.save_pretrained(target)
    return target


@pytest.mark.parametrize("args, needle", [
    (["feature-view", *TINY, "--layer", "7"], "layer 7 out of range for 'random:gpt2-tiny': it has blocks 0..3"),
    (["intervention", *TINY, "--layer", "-5"], "layer -5 out of range"),
    (["layerwise", "--model", "{dir}", "--device", "cpu", "--seq-len", "600"],
     "--seq-len 600 is longer than the model's context of 512 tokens"),
    (["layerwise", *TINY, "--text", "missing.txt"], "text file 'missing.txt' does not exist"),
    (["intervention", *TINY, "--mean-text", "missing.txt"], "text file 'missing.txt' does not exist"),
    (["feature-view", *TINY, "--prompt", " "], "empty prompt"),
    (["study", *TINY, "--datasets", "builtin,missing.txt"], "text file 'missing.txt' does not exist"),
    (["layerwise", *TINY, "--hooks", "blocks.0.hook_resid_post,blocks.9.hook_resid_post"], "out of range for"),
    (["layerwise", *TINY, "--text", "hf:"], "text 'hf:' is not allowed"),
])
def test_refused_before_the_model_loads(tmp_path, capsys, monkeypatch, tiny_hf_dir, args, needle):
    from mech_interp.models.language_study import LanguageModelStudy

    monkeypatch.setattr(LanguageModelStudy, "open", lambda self, run: pytest.fail("the model was loaded"))
    out = tmp_path / "results"
    code, _, stderr = run_cli([*(a.replace("{dir}", str(tiny_hf_dir)) for a in args), "--out", out], capsys)
    assert_refused(code, stderr, needle, out)
