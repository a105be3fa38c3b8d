"""Bad input to ``train-gpt2-bias`` and to mech_interp's loader of its checkpoints, as a hostile user would try it:
each is refused in one line ``<prog>: error: ...`` naming the value, with exit status 2, leaves nothing behind, and
runs no code that a user's file names. Then what can go wrong once training runs: a loss that diverges, a PNG export
that fails, an analysis that raises, and the wall time a rerun reports.

Everything runs in-process; the refusals build no model (unit tier), the rest trains the tiny preset for a few
steps on the built-in text with the byte tokenizer.
"""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
import sys
import warnings
from importlib import resources
from pathlib import Path

import pytest
import torch

from mech_interp.viz.writing import PNG_ENV
from train_gpt2_bias.cli import main

from .cli_runs import assert_refused, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:no Chromium found")

PROG = "train-gpt2-bias"
TRAIN = ["train", "--preset", "tiny", "--tokenizer", "byte", "--corpus", "{tmp}/corpus", "--val-fraction", "0.3",
         "--data-dir", "{tmp}/data", "--no-progress", "--out", "{tmp}/run"]
ZEN = "Beautiful is better than ugly"


def builtin_text() -> str:
    return (resources.files("mech_interp") / "data" / "sample_text.txt").read_text(encoding="utf-8")


def corpus_dir(root: Path) -> Path:
    """Sixteen documents: with --val-fraction 0.3 the hash split puts some in each split."""
    text = builtin_text()
    (root / "corpus").mkdir()
    for i in range(16):
        (root / "corpus" / f"doc{i:02d}.txt").write_text(text[i * len(text) // 16:(i + 1) * len(text) // 16])
    return root / "corpus"


class Payload:
    """Unpickling it writes ``target``: what a crafted pickle would do with a shell instead."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return Path.write_text, (self.target, "the payload ran")


def tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def refused(code: int, stderr: str, needle: str, prog: str = PROG) -> None:
    """Exit 2 and stderr exactly one line, the error naming ``needle``."""
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith(f"{prog}: error: ") and needle in stderr, stderr


def no_warnings(caught: list) -> None:
    """Nothing but the error line: a library's multi-line warning (torch's on pickle protocols) is not shown."""
    assert not [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]


# --- train-gpt2-bias: files the cases use, built in tmp_path ----------------------------------------

def _state(t: Path, content) -> None:
    (t / "run").mkdir()
    if isinstance(content, bytes):
        (t / "run" / "ckpt.pt").write_bytes(content)
    else:
        torch.save(content, t / "run" / "ckpt.pt")


def _truncated_state(t: Path) -> None:
    _state(t, {"model": {"w": torch.zeros(4096)}, "step": 3})
    data = (t / "run" / "ckpt.pt").read_bytes()
    (t / "run" / "ckpt.pt").write_bytes(data[: len(data) // 2])


def _pickle_protocol_4(path: Path) -> None:
    """A plain pickle of protocol 4 (not torch.save's 2): torch warns in several lines before it refuses the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"model": torch.zeros(2)}, protocol=4))


def _nested_dict(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _log_linked_out(t: Path) -> None:  # the run would write its log through the link, over a file outside --out
    (t / "outside.json").write_text("a user's file")
    (t / "run").mkdir()
    (t / "run" / "log.json").symlink_to(t / "outside.json")


def _tokenizer_linked_out(t: Path) -> None:
    (t / "elsewhere").mkdir()
    (t / "run").mkdir()
    (t / "run" / "tokenizer").symlink_to(t / "elsewhere")


def _results_tree(t: Path) -> None:
    run = t / "run" / "gpt2-tiny" / "layerwise"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    (t / "run" / "plotly.min.js").write_text("")


def _file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")


def _gz(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data))


def _nested_config(t: Path) -> None:
    (t / "deep.toml").write_text("max_steps = " + "[" * 100_000 + "]" * 100_000 + "\n")


# (id, setup(tmp) -> None, args with {tmp} placeholders, expected substring of the one error line)
CASES = [
    # resuming: torch.load(weights_only=False) ran the payload before any check
    ("resume-pickled-code", lambda t: _state(t, Payload(t / "pwned")), TRAIN,
     "cannot read training state '{tmp}/run/ckpt.pt' (not loadable with weights_only=True: "),
    ("resume-garbage", lambda t: _state(t, b"not a checkpoint at all"), TRAIN,
     "cannot read training state '{tmp}/run/ckpt.pt' (not loadable with weights_only=True: "),
    ("resume-truncated", _truncated_state, TRAIN,
     "cannot read training state '{tmp}/run/ckpt.pt' ("),
    ("resume-text-file", lambda t: _state(t, b"hi\n"), TRAIN,
     "cannot read training state '{tmp}/run/ckpt.pt' (KeyError: 105): expected a training state this trainer wrote"),
    ("resume-pickle-protocol-4", lambda t: _pickle_protocol_4(t / "run" / "ckpt.pt"), TRAIN,
     "cannot read training state '{tmp}/run/ckpt.pt' (not loadable with weights_only=True: "),
    ("resume-not-a-dict", lambda t: _state(t, [1, 2, 3]), TRAIN, "(it holds a list)"),
    ("resume-step-not-a-number", lambda t: _state(t, {"model": {}, "optimizer": {}, "step": "3", "batch_rng": [],
                                                      "log": [], "identity": {}, "model_config": {}}),
     TRAIN, "its 'step' is str, not int"),
    ("resume-identity-nested-100", lambda t: _state(t, {"model": {}, "optimizer": {}, "step": 3, "batch_rng": [],
                                                        "log": [], "identity": _nested_dict(100), "model_config": {}}),
     TRAIN, "its 'identity' nests deeper than 32 levels"),
    # --out
    ("log-name-on-a-link", _log_linked_out, TRAIN,
     "holds 'log.json', which is a symbolic link to '{tmp}/outside.json': train-gpt2-bias writes a regular file"),
    ("tokenizer-name-on-a-link", _tokenizer_linked_out, TRAIN, "holds 'tokenizer', which is a symbolic link to"),
    ("tokenizer-dir-without-files", lambda t: (t / "tok").mkdir(), [*TRAIN[:4], "{tmp}/tok", *TRAIN[5:]],
     "--tokenizer '{tmp}/tok' cannot be loaded ("),
    ("out-is-a-file", lambda t: (t / "run").write_text("x"), TRAIN, "'{tmp}/run' is a file, not a directory"),
    ("out-is-a-results-tree", _results_tree, TRAIN,
     "--out '{tmp}/run' is a directory that is not a training run: it holds 'gpt2-tiny', which"),
    # a run file's name on something else: unlink() or a write into it ended in a traceback
    ("state-name-on-a-directory", lambda t: (t / "run" / "ckpt.pt").mkdir(parents=True), [*TRAIN, "--no-resume"],
     "--out '{tmp}/run' holds 'ckpt.pt', which is a directory: train-gpt2-bias writes a regular file by that name"),
    ("state-name-on-a-directory-resumed", lambda t: (t / "run" / "ckpt.pt").mkdir(parents=True), TRAIN,
     "holds 'ckpt.pt', which is a directory"),
    ("scratch-name-on-a-directory", lambda t: (t / "run" / "model.safetensors.tmp").mkdir(parents=True), TRAIN,
     "holds 'model.safetensors.tmp', which is a directory"),
    ("tokenizer-name-on-a-file", lambda t: _file(t / "run" / "tokenizer"), TRAIN,
     "holds 'tokenizer', which is a regular file: train-gpt2-bias writes a directory by that name"),
    ("experiment-variant-dir-is-foreign", lambda t: (t / "exp" / "attn_bias" / "notes").mkdir(parents=True),
     ["experiment", "--preset", "tiny", "--tokenizer", "byte", "--corpus", "{tmp}/corpus", "--val-fraction", "0.3",
      "--root", "{tmp}/exp", "--text", "{tmp}/corpus/doc00.txt"],
     "--out '{tmp}/exp/attn_bias' is a directory that is not a training run"),
    # corpora: read strictly (they were decoded with errors='replace', or reported as an empty split)
    ("corpus-latin-1", lambda t: (t / "latin.txt").write_bytes("caf\xe9 ol\xe9. ".encode("latin-1") * 100),
     [*TRAIN, "--corpus", "{tmp}/latin.txt"], "corpus file '{tmp}/latin.txt' is not UTF-8 (byte 0xe9 at offset 3)"),
    ("corpus-binary", lambda t: (t / "blob.bin.txt").write_bytes(bytes(range(256)) * 64),
     [*TRAIN, "--corpus", "{tmp}/blob.bin.txt"], "is not UTF-8 (byte 0x80 at offset 128)"),
    ("corpus-gz-in-a-directory", lambda t: _gz(t / "docs" / "a.text.gz", b"ok\n" + "\xe9".encode("latin-1")),
     [*TRAIN, "--corpus", "{tmp}/docs"],
     "'{tmp}/docs/a.text.gz' is not UTF-8 (byte 0xe9 at offset 3 of its decompressed data)"),
    ("corpus-gz-truncated", lambda t: (t / "cut.gz").write_bytes(gzip.compress(b"text " * 1000)[:40]),
     [*TRAIN, "--corpus", "{tmp}/cut.gz"], "corpus file '{tmp}/cut.gz' cannot be read (EOFError"),
    # the learning-rate schedule
    ("min-lr-above-lr", None, [*TRAIN, "--lr", "0.01", "--min-lr", "0.1"],
     "--min-lr 0.1 is above --lr 0.01: the decay would raise the learning rate"),
    ("lr-infinite", None, [*TRAIN, "--lr", "inf"], "--lr inf is not allowed: expected a finite number >= 0"),
    # config files
    ("config-nested-100000-deep", _nested_config, [*TRAIN, "--config", "{tmp}/deep.toml"],
     "nests lists or tables deeper than 32 levels"),
    # values
    ("variant-unknown", None, [*TRAIN, "--variant", "nope"], "unknown variant 'nope'"),
    ("preset-unknown", None, [*TRAIN, "--preset", "huge"], "unknown preset 'huge'"),
    ("max-steps-zero", None, [*TRAIN, "--max-steps", "0"], "--max-steps 0"),
    ("d-model-not-a-multiple", None, [*TRAIN, "--d-model", "30", "--n-heads", "4"], "not a multiple"),
    ("corpus-missing", None, [*TRAIN, "--corpus", "{tmp}/missing"], "corpus source '{tmp}/missing' not found"),
    ("experiment-variants-unknown", None, ["experiment", "--variants", "default,nope"], "--variants"),
]


@pytest.mark.unit  # no case builds a model: every refusal comes first
@pytest.mark.parametrize("case_id, setup, args, needle", CASES, ids=[c[0] for c in CASES])
def test_train_gpt2_bias_refuses_bad_input_in_one_line(tmp_path, capsys, monkeypatch, case_id, setup, args, needle):
    corpus_dir(tmp_path)
    if setup is not None:
        setup(tmp_path)
    monkeypatch.chdir(tmp_path)  # nothing may be written into the working directory either
    before = tree(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    captured = capsys.readouterr()
    refused(code, captured.err, needle.replace("{tmp}", str(tmp_path)))
    no_warnings(caught)
    assert tree(tmp_path) == before, f"a refused run created files: {sorted(tree(tmp_path) - before)}"
    assert "[done]" not in captured.out


# --- checkpoints that name code: mech_interp must never import or call it -----------------------------

SIZES = {"n_layers": 1, "d_model": 8, "n_ctx": 8, "d_vocab": 8}
CONFIG = {**SIZES, "n_heads": 2, "d_head": 4, "d_mlp": 32, "act_fn": "gelu", "normalization_type": "LN",
          "positional_embedding_type": "standard", "attention_dir": "causal", "default_prepend_bos": False,
          "original_architecture": "GPT2-default", "model_name": "gpt2-default", "eps": 1e-5, "variant": "default",
          "bias": False, "n_prefix_tokens": 0, "n_key_slots": 0, "format": "train_gpt2_bias", "format_version": 1}
EVIL_MODULE = ("from pathlib import Path\n"
               "Path(__file__).with_name('pwned').write_text('the payload ran')\n"
               "build = print\n")


def _checkpoint(t: Path, config: dict, weights: str = "model.safetensors", payload: bool = False) -> None:
    ck = t / "ck"
    ck.mkdir()
    (ck / "hooked_config.json").write_text(json.dumps(config))
    if payload:
        torch.save(Payload(t / "pwned"), ck / weights)
    else:
        (ck / weights).write_bytes(b"")


def _model_pt(t: Path, write) -> None:
    _checkpoint(t, CONFIG, "model.pt")
    write(t / "ck" / "model.pt")


def _sized_weights(n_layers: int) -> dict[str, torch.Tensor]:
    """Zeros shaped as the tensors of CONFIG's model that carry its sizes, with ``n_layers`` blocks."""
    d, heads, d_head, d_mlp = CONFIG["d_model"], CONFIG["n_heads"], CONFIG["d_head"], CONFIG["d_mlp"]
    shapes = {"embed.W_E": (CONFIG["d_vocab"], d), "pos_embed.W_pos": (CONFIG["n_ctx"], d),
              "unembed.W_U": (d, CONFIG["d_vocab"])}
    for i in range(n_layers):
        shapes.update({f"blocks.{i}.attn.{w}": (heads, d, d_head) for w in ("W_Q", "W_K", "W_V")})
        shapes.update({f"blocks.{i}.attn.W_O": (heads, d_head, d), f"blocks.{i}.mlp.W_in": (d, d_mlp),
                       f"blocks.{i}.mlp.W_out": (d_mlp, d)})
    return {name: torch.zeros(shape) for name, shape in shapes.items()}


def _sized_checkpoint(t: Path, config: dict, n_layers: int = 1, weights: str = "model.safetensors") -> None:
    from safetensors.torch import save_file

    _checkpoint(t, config, weights)
    if weights.endswith(".pt"):
        torch.save(_sized_weights(n_layers), t / "ck" / weights)
    else:
        save_file(_sized_weights(n_layers), t / "ck" / weights)


def _stub_blocks(t: Path, n_layers: int) -> None:
    """One real block and n_layers - 1 one-value tensors named as blocks: the build made n_layers real blocks."""
    from safetensors.torch import save_file

    _checkpoint(t, {**CONFIG, "n_layers": n_layers})
    weights = _sized_weights(1) | {f"blocks.{i}.attn.W_Q": torch.zeros(1) for i in range(1, n_layers)}
    save_file(weights, t / "ck" / "model.safetensors")


def _cut_weights(t: Path) -> None:
    from safetensors.torch import save_file

    _checkpoint(t, CONFIG)
    save_file({"w": torch.zeros(1000)}, t / "ck" / "model.safetensors")
    data = (t / "ck" / "model.safetensors").read_bytes()
    (t / "ck" / "model.safetensors").write_bytes(data[: len(data) // 2])


def _deep_checkpoint(t: Path) -> None:
    _checkpoint(t, CONFIG)
    config = (t / "ck" / "hooked_config.json").read_text()
    (t / "ck" / "hooked_config.json").write_text(config[:-1] + ', "n_ctx": ' + "[" * 100_000 + "]" * 100_000 + "}")


def _shell_checkpoint(t: Path) -> None:
    # subprocess.run(config) iterates the dict: its keys, in order, are the command line
    _checkpoint(t, {"sh": 0, "-c": 0, f"echo the payload ran > {t}/pwned": 0, "builder": "subprocess:run", **SIZES})


def _module_in_cwd(t: Path) -> None:
    (t / "evil.py").write_text(EVIL_MODULE)
    _checkpoint(t, {"builder": "evil:build", **SIZES})


CHECKPOINT_CASES = [
    ("builder-subprocess-run", _shell_checkpoint, "names builder 'subprocess:run', which is not loaded"),
    ("builder-module-in-cwd", _module_in_cwd, "names builder 'evil:build', which is not loaded"),
    ("builder-this", lambda t: _checkpoint(t, {"builder": "this:s", **SIZES}), "names builder 'this:s'"),
    ("builder-not-a-string", lambda t: _checkpoint(t, {"builder": ["evil", "build"], **SIZES}),
     "names builder ['evil', 'build'], which is not loaded"),
    ("builder-beside-format", lambda t: _checkpoint(t, {**CONFIG, "builder": "train_gpt2_bias.model:build_model"}),
     "names builder 'train_gpt2_bias.model:build_model', which is not loaded"),
    ("format-unknown", lambda t: _checkpoint(t, {**CONFIG, "format": "pickle"}),
     "has format 'pickle': expected \"format\": 'train_gpt2_bias' with format_version 1"),
    ("format-version-unknown", lambda t: _checkpoint(t, {**CONFIG, "format_version": 2}), "has format_version 2"),
    ("variant-unknown", lambda t: _checkpoint(t, {**CONFIG, "variant": "evil"}),
     "has variant 'evil': expected one of default, sink, attn_bias, gated"),
    ("remote-tokenizer-keys", lambda t: _checkpoint(t, {**CONFIG, "tokenizer_name": "x", "trust_remote_code": True}),
     "has unknown key(s) 'tokenizer_name', 'trust_remote_code'"),
    ("size-not-an-integer", lambda t: _checkpoint(t, {**CONFIG, "d_model": "8"}),
     "has d_model '8': expected a positive integer"),
    ("key-missing", lambda t: _checkpoint(t, {k: v for k, v in CONFIG.items() if k != "eps"}), "lacks 'eps'"),
    ("config-nested-100000", _deep_checkpoint,
     "hooked_config.json nests lists or tables deeper than 32 levels"),
    # model.pt must be a plain state dict: pickled code ended in a traceback quoting PyTorch's unpickler
    ("weights-pickled-code", lambda t: _checkpoint(t, CONFIG, "model.pt", payload=True),
     "cannot read checkpoint weights '{tmp}/ck/model.pt' (not loadable with weights_only=True: "),
    ("weights-text-file", lambda t: _model_pt(t, lambda p: p.write_text("hi\n")),
     "cannot read checkpoint weights '{tmp}/ck/model.pt' (KeyError: 105): expected model.safetensors, or model.pt "
     "saved from model.state_dict()"),
    ("weights-pickle-protocol-4", lambda t: _model_pt(t, _pickle_protocol_4),
     "cannot read checkpoint weights '{tmp}/ck/model.pt' (not loadable with weights_only=True: "),
    ("weights-not-a-state-dict", lambda t: _model_pt(t, lambda p: torch.save([1], p)),
     "model.pt holds a list, not a state dict of tensors"),
    ("weights-not-safetensors", lambda t: _checkpoint(t, CONFIG),
     "cannot read checkpoint weights '{tmp}/ck/model.safetensors' ("),
    ("weights-cut-short", _cut_weights,
     "cannot read checkpoint weights '{tmp}/ck/model.safetensors' (Error while deserializing header"),
    # sizes the weights do not have: the build allocated them first (32 TB for this d_mlp), or built in vain
    ("d-mlp-beyond-the-weights", lambda t: _sized_checkpoint(t, {**CONFIG, "d_mlp": 10**12}),
     "hooked_config.json has d_mlp 1000000000000, but the weights have 32 (model.safetensors: blocks.0.mlp.W_in "
     "[8, 32]): expected the sizes of the weights beside it"),
    ("n-layers-beyond-the-weights", lambda t: _sized_checkpoint(t, {**CONFIG, "n_layers": 3}, n_layers=2),
     "hooked_config.json has n_layers 3, but the weights have 2 (model.safetensors: blocks 0..1)"),
    ("d-vocab-in-model-pt", lambda t: _sized_checkpoint(t, {**CONFIG, "d_vocab": 50257}, weights="model.pt"),
     "hooked_config.json has d_vocab 50257, but the weights have 8 (model.pt: embed.W_E [8, 8])"),
    ("stub-blocks-beside-a-real-one", lambda t: _stub_blocks(t, 1000),
     "the weights' block 1 (model.safetensors) is not shaped as block 0 (blocks.1.attn.W_K): expected n_layers alike"),
    ("size-weight-missing", lambda t: _sized_checkpoint(t, CONFIG, n_layers=0),
     "the weights (model.safetensors) have no 'blocks.0.attn.W_Q', which gives n_heads"),
]
BATCH = "[defaults]\ndevice = 'cpu'\n[[runs]]\nmodels = ['{ck}']\nexperiments = ['feature_view']\n"


@pytest.mark.unit  # every checkpoint is refused before a model is built
@pytest.mark.parametrize("how", ["feature-view", "batch"])
@pytest.mark.parametrize("case_id, setup, needle", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_checkpoints_never_run_code_they_name(tmp_path, capsys, monkeypatch, case_id, setup, needle, how):
    setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m mech_interp.cli` run in this directory would have it
    out = tmp_path / "results"
    if how == "batch":
        (tmp_path / "b.toml").write_text(BATCH.format(ck=tmp_path / "ck"))
        args = ["batch", tmp_path / "b.toml", "--out", out]
    else:
        args = ["feature-view", "--model", tmp_path / "ck", "--device", "cpu", "--out", out]
    before = tree(tmp_path)
    fresh = {"this", "evil"} - set(sys.modules)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, stdout, stderr = run_cli(args, capsys)
    assert not (tmp_path / "pwned").exists(), "the checkpoint's code ran"
    assert ZEN not in stdout and not fresh & set(sys.modules), "the checkpoint's module was imported"
    assert_refused(code, stderr, needle.replace("{tmp}", str(tmp_path)), out)
    assert stderr.count("\n") == 1, stderr
    no_warnings(caught)
    assert tree(tmp_path) == before, sorted(tree(tmp_path) - before)


# --- runs that fail after they started ---------------------------------------------------------------

@pytest.fixture
def corpus(tmp_path) -> Path:
    return corpus_dir(tmp_path)


def train_args(tmp_path: Path, corpus: Path, *extra) -> list[str]:
    return ["train", "--preset", "tiny", "--tokenizer", "byte", "--corpus", str(corpus), "--val-fraction", "0.3",
            "--data-dir", str(tmp_path / "data"), "--no-progress", "--out", str(tmp_path / "run"), "--max-steps", "4",
            "--warmup-steps", "1", "--eval-interval", "2", "--ckpt-interval", "2", *extra]


# (id, extra flags, the error line): the last step's update is not followed by another loss, so the weights and the
# val loss it computes are checked before anything is written (it was saved, holding inf, with exit status 0)
DIVERGING = [
    ("loss-at-step-2", [], "training diverged: the loss is nan at step 2, learning rate 9.97e+29 (--lr 1e+30)"),
    ("last-step", ["--max-steps", "1"], "training diverged: the val loss is nan after step 1, learning rate 1e+30 "
                                        "(--lr 1e+30); the model was not saved: lower --lr"),
]


@pytest.mark.integration
@pytest.mark.parametrize("case_id, extra, needle", DIVERGING, ids=[c[0] for c in DIVERGING])
def test_a_diverging_loss_stops_the_run_and_saves_no_model(tmp_path, capsys, corpus, case_id, extra, needle):
    code = main(train_args(tmp_path, corpus, "--lr", "1e30", *extra))
    captured = capsys.readouterr()
    refused(code, captured.err, needle)
    assert "[done]" not in captured.out
    assert not any((tmp_path / "run" / name).exists() for name in ("hooked_config.json", "model.safetensors",
                                                                    "manifest.json", "ckpt.pt"))


@pytest.mark.integration
def test_a_state_without_timing_leaves_the_wall_time_unknown(tmp_path, capsys, corpus):
    """A ckpt.pt of the previous version has no train_seconds: the time before the resume is unknown, so the total
    is too (it was counted as 0 and reported as if exact)."""
    assert main(train_args(tmp_path, corpus, "--stop-after", "2")) == 0, capsys.readouterr().err
    state = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    del state["train_seconds"]
    torch.save(state, tmp_path / "run" / "ckpt.pt")
    assert main(train_args(tmp_path, corpus)) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "manifest.json").read_text())["summary"]
    assert summary["steps"] == 4 and summary["train_seconds"] is None
    assert "train_seconds" not in torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)  # still unknown


@pytest.mark.integration
def test_a_small_single_file_corpus_trains(tmp_path, capsys):
    """One short document: every piece hashes to one side, so the stream's tail is held out (it was refused as
    an empty val split)."""
    corpus = tmp_path / "small.txt"
    corpus.write_text(builtin_text()[:3000])
    code = main(train_args(tmp_path, corpus, "--n-ctx", "16", "--val-fraction", "0.02"))
    assert code == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "run" / "manifest.json").read_text())["data"]
    total = meta["train_tokens"] + meta["val_tokens"]
    assert meta["split"] == "tokens" and total > 3000 and meta["val_tokens"] == round(0.02 * total)


@pytest.mark.integration
def test_a_failed_png_export_keeps_the_training_run(tmp_path, capsys, monkeypatch, corpus):
    import plotly.graph_objects as go

    def broken(*args, **kwargs):
        raise ReferenceError("kaleido_scopes is not defined")

    monkeypatch.setattr(go.Figure, "write_image", broken)
    monkeypatch.setenv(PNG_ENV, "1")  # PNG on, and png_export_available() says a browser is there
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chromium")
    with pytest.warns(UserWarning, match="loss_curve.png was not written"):
        code = main(train_args(tmp_path, corpus))
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["missing_figures"] == {"loss_curve.png": "ReferenceError: kaleido_scopes is not defined"}
    assert (tmp_path / "run" / "loss_curve.html").is_file() and not (tmp_path / "run" / "loss_curve.png").exists()


# --- the experiment: analyses that fail, and the time a rerun reports ---------------------------------

SHARED = ["--preset", "tiny", "--tokenizer", "byte", "--no-progress", "--max-steps", "4", "--warmup-steps", "1",
          "--eval-interval", "2", "--ckpt-interval", "2", "--val-fraction", "0.3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Both variants of the experiment trained once (4 steps); each test copies them into its own root."""
    root = tmp_path_factory.mktemp("trained")
    common = [*SHARED, "--corpus", str(corpus_dir(root)), "--data-dir", str(root / "data")]
    for variant in ("default", "attn_bias"):
        assert main(["train", *common, "--variant", variant, "--out", str(root / "exp" / variant)]) == 0
    return {"root": root, "args": ["experiment", *common, "--text", str(root / "corpus" / "doc00.txt"), "--n-seqs", "2",
                                   "--attention-windows", "2", "--attention-prompt",
                                   "Summer is warm. Winter is cold."]}


def experiment_root(trained: dict, tmp_path: Path) -> Path:
    root = tmp_path / "exp"
    shutil.copytree(trained["root"] / "exp", root)
    return root


@pytest.mark.integration
def test_a_failed_analysis_makes_the_experiment_fail(trained, tmp_path, capsys, monkeypatch):
    from mech_interp.runs import runner

    execute = runner.execute

    def attention_raises(run, *args, **kwargs):
        if run.experiment.name == "attention":
            raise RuntimeError("the attention analysis broke")
        return execute(run, *args, **kwargs)

    monkeypatch.setattr(runner, "execute", attention_raises)
    root = experiment_root(trained, tmp_path)
    code = main([*trained["args"], "--root", str(root)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith(f"{PROG}: error:")]
    assert errors == [f"{PROG}: error: 2 analysis run(s) failed (attention on default, attention on attn_bias; see "
                      "[failed] above): the comparison says which did not run; the same command runs them again"]
    assert "[failed] attention on default: RuntimeError" in captured.out
    text = (root / "comparison" / "comparison.md").read_text()
    assert "did not run: attention on default, attention on attn_bias" in text
    assert len(list((root / "analysis").rglob("layerwise.parquet"))) == 2  # the analyses that ran are kept


@pytest.mark.integration
def test_a_failed_png_export_keeps_every_analysis(trained, tmp_path, capsys, monkeypatch):
    import plotly.graph_objects as go

    def broken(*args, **kwargs):
        raise ReferenceError("kaleido_scopes is not defined")

    monkeypatch.setattr(go.Figure, "write_image", broken)
    monkeypatch.setenv(PNG_ENV, "1")
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chromium")
    root = experiment_root(trained, tmp_path)
    with pytest.warns(UserWarning, match="was not written"):
        code = main([*trained["args"], "--root", str(root)])
    captured = capsys.readouterr()
    assert code == 0 and "[failed]" not in captured.out, captured.out + captured.err
    manifests = [json.loads(p.read_text()) for p in (root / "analysis").rglob("manifest.json")]
    assert len(manifests) == 6 and all(m.get("missing_figures") for m in manifests)
    assert len(list((root / "analysis").rglob("*.parquet"))) >= 6 and list((root / "analysis").rglob("*.html"))
    comparison = json.loads((root / "comparison" / "manifest.json").read_text())
    assert set(comparison["missing_figures"]) >= {"top1.png", "attn_first_token.png"}


@pytest.mark.integration
def test_a_rerun_reports_the_training_wall_time_not_its_own(trained, tmp_path, capsys):
    root = experiment_root(trained, tmp_path)
    # as if default had trained for minutes, and attn_bias had resumed a state without timing (train_seconds None)
    for variant, seconds in (("default", 750.0), ("attn_bias", None)):
        manifest = json.loads((root / variant / "manifest.json").read_text())
        assert isinstance(manifest["summary"]["train_seconds"], float)  # recorded (4 tiny steps may round to 0.0)
        manifest["summary"]["train_seconds"] = seconds
        (root / variant / "manifest.json").write_text(json.dumps(manifest))
    assert main([*trained["args"], "--root", str(root)]) == 0, capsys.readouterr().err
    assert "nothing to do" in capsys.readouterr().out
    text = (root / "comparison" / "comparison.md").read_text()
    assert "| default | 4 |" in text and "| 12.5 min |" in text
    assert "| attn_bias | 4 |" in text and text.count("| unknown |") == 1
    assert "unknown: not recorded (resumed from a state without timing" in text
    assert "wall time of this command" not in text
