"""``mech-interp batch FILE --backend ray``: each run of a batch file as one Ray task.

The driver (the machine running the command) does everything that decides what runs: it expands
and checks the file, reads which runs are already complete under ``--out`` (the same skip/resume
rules as the local backend), checks that every run's resource needs fit on some node of the
cluster and that every node sees the run's local inputs (model files, text files) and, with shared
results, the output directory; only then does it submit the runs that are not done, one task each.

Where results land, set by the batch file's ``[ray] results``:

- ``"driver"`` (default): a task runs into a scratch directory on its node and returns the finished
  run directory's files; the driver publishes them under ``--out`` on its own filesystem the way a
  local run is published (built in ``<run>.partial``, renamed when complete, manifest last). Works
  on any cluster; a killed task leaves nothing behind, and the intervention's resumable pieces stay
  on the node that was killed (the rerun computes them again).
- ``"shared"``: ``--out``, or the absolute path ``[ray] out`` names, is a path that every node
  mounts; tasks write into it directly, with the local backend's atomic directories and locks, so
  pieces of a killed run are resumed.

A task that fails (an exception, a killed worker after ``--max-retries`` retries) is reported with
its run directory and does not stop the others; the command then exits with status 1 and the same
command runs exactly the runs that are still missing (a run refused as bad input says so: a rerun
would repeat it). Runs that share a run directory are run once if they are the same computation and
refused if not. A task records the driver's identity of its run, after checking that the node
computes the same configuration (only the model's path and file times may differ), so that skip and
resume on the driver read it. Tasks run with ``TQDM_DISABLE=1`` and the driver's ``MECH_INTERP_*``
and Hugging Face offline settings; GPU tasks run in a fresh worker process each (a reused process
would keep its first GPU), CPU workers keep the last model loaded for the next run of it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..validation.errors import UsageError, reason
from .batch import read_config
from .output import RunWriter, check_writable
from .resources import RunResources, parse_overrides, resources_for
from .runner import Contexts, identity_difference, run_state
from .spec import RunSpec, resolve
from .studies import get_study
from .study import ResolvedRun

RESULTS = ("driver", "shared")
RAY_KEYS = {"results", "out", "resources"}
CONNECT_TIMEOUT_S = 10.0  # a cluster's head answers in milliseconds; a firewall that drops packets never does
EXIT_FAILED = 1  # some runs failed; the finished ones are kept and a rerun does the rest
FORWARDED_ENV = ("MECH_INTERP_", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT", "HF_HOME", "TRANSFORMERS_OFFLINE")
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9.\-]+:(\d{1,5})$")


@dataclass(frozen=True)
class RaySettings:
    results: str = "driver"
    resources: dict[str, dict[str, float]] = field(default_factory=dict)
    out: Path | None = None  # a shared results path given in the file, used instead of --out


def check_address(address: str | None) -> None:
    """``--address``, or ``RAY_ADDRESS`` when it is not given (Ray reads it instead), refused in one line before anything
    runs when it is malformed or names Ray Client without the ``ray[client]`` extra (Ray raises a traceback for both)."""
    given, value = (f"--address {address!r}", address) if address is not None else (
        f"RAY_ADDRESS={os.environ.get('RAY_ADDRESS', '')!r}", os.environ.get("RAY_ADDRESS", "").strip())
    if not value or value == "auto":
        return
    match = _ADDRESS.match(value)
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise UsageError(f"{given} is not allowed: expected auto, HOST:PORT or ray://HOST:PORT")
    import importlib.util

    if match.group(1) and importlib.util.find_spec("grpc") is None:
        raise UsageError(f"{given}: a ray:// address goes through Ray Client, which is not installed: "
                         "pip install 'ray[client]', or give the cluster's HOST:PORT")


def _unanswered(address: str | None) -> str | None:
    """Why nothing listens at a HOST:PORT address (``--address`` or ``RAY_ADDRESS``), or None. Ray itself retries a
    closed port for ever, so the command would hang until killed."""
    value = address if address is not None else os.environ.get("RAY_ADDRESS", "").strip()
    match = _ADDRESS.match(value or "")
    if match is None:
        return None  # auto: Ray finds the local cluster's file, or says quickly that there is none
    host = value.removeprefix("ray://").rsplit(":", 1)[0]
    try:
        with socket.create_connection((host, int(match.group(2))), timeout=CONNECT_TIMEOUT_S):
            return None
    except TimeoutError:
        return f"no answer within {CONNECT_TIMEOUT_S:g} s"
    except OSError as err:
        return (err.strerror or str(err)).lower()


def check_ray_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise UsageError("--backend ray needs Ray, an optional extra: pip install -e '.[ray]' (or pip install 'ray>=2.9')")


def read_ray_settings(path: str | Path, runs: Sequence[ResolvedRun]) -> RaySettings:
    """The batch file's ``[ray]`` table, checked: ``results`` and per-model ``resources``."""
    table = read_config(path).get("ray", {})
    where = f"config file {str(path)!r}: [ray]"
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table with some of {', '.join(sorted(RAY_KEYS))}")
    unknown = sorted(set(table) - RAY_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (accepted: {', '.join(sorted(RAY_KEYS))})")
    out = table.get("out")
    results = table.get("results", "shared" if out is not None else "driver")
    if results not in RESULTS:
        raise UsageError(f"{where}.results = {results!r}: expected one of {', '.join(RESULTS)}")
    if out is not None:
        if not isinstance(out, str) or not Path(out).expanduser().is_absolute():
            raise UsageError(f"{where}.out = {out!r}: expected an absolute path that every node mounts "
                             "(a relative one would mean another directory on each worker)")
        if results != "shared":
            raise UsageError(f"{where}: out = {out!r} is a shared results path, but results = {results!r}: "
                             "drop one of them")
        out = Path(out).expanduser()
        check_writable(out)
    models = {run.options.model for run in runs}
    return RaySettings(results, parse_overrides(table.get("resources", {}), models, f"{where}.resources"), out)


# --------------------------------------------------------------------------- what each node must see


def local_inputs(runs: Sequence[ResolvedRun]) -> dict[str, int | None]:
    """The local files the runs read, as given (relative to the driver's working directory), with
    their size (None for a directory): each node must see the same ones to compute the same thing."""
    inputs: dict[str, int | None] = {}
    for run in runs:
        inputs.update(run.study.local_inputs(run))
    return inputs


def probe_node(cwd: str, inputs: dict[str, int | None], shared_out: str | None, token: str | None) -> list[str]:
    """What this node lacks: inputs missing or of another size, the shared output unseen or read-only."""
    problems = []
    base = Path(cwd) if Path(cwd).is_dir() else None
    for given, size in inputs.items():
        path = Path(given).expanduser()
        if not path.is_absolute():
            if base is None:
                problems.append(f"{given!r} is relative and the driver's directory {cwd} does not exist here")
                continue
            path = base / path
        if not path.exists():
            problems.append(f"{given!r} does not exist here")
        elif size is not None and (not path.is_file() or path.stat().st_size != size):
            problems.append(f"{given!r} differs here (not the driver's {size} bytes)")
    if shared_out is not None:
        marker = Path(shared_out) / f".ray-probe-{token}"
        try:
            seen = marker.read_text() == token
        except OSError:
            seen = False
        if not seen:
            problems.append(f"--out {shared_out} is not the driver's directory here (the driver's marker file is absent)")
        elif not os.access(shared_out, os.W_OK | os.X_OK):
            problems.append(f"--out {shared_out} is not writable here")
    return problems


def check_cluster(ray, needs: dict[str, RunResources], inputs: dict[str, int | None], shared_out: Path | None) -> None:
    """Refuse runs that no node can take, and inputs or a shared output that some node cannot see."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    for run, need in needs.items():
        fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= need.num_cpus
                and n["Resources"].get("GPU", 0) >= need.num_gpus and n["Resources"].get("memory", 0) >= need.memory]
        if not fits:
            most = max(nodes, key=lambda n: (n["Resources"].get("GPU", 0), n["Resources"].get("memory", 0)))["Resources"]
            raise UsageError(f"run {run} needs {need.describe()}, more than any Ray node has (largest: "
                             f"{most.get('CPU', 0):g} CPU, {most.get('GPU', 0):g} GPU, {most.get('memory', 0) / 2**30:.1f} GiB): "
                             "lower it in the batch file's [ray.resources], or add a node that has it")
    if not inputs and shared_out is None:
        return
    token = uuid.uuid4().hex
    made = []  # the directories the marker needed, removed again if the check refuses
    if shared_out is not None:
        for parent in [shared_out, *shared_out.parents]:
            if parent.exists():
                break
            made.append(parent)
        shared_out.mkdir(parents=True, exist_ok=True)
        (shared_out / f".ray-probe-{token}").write_text(token)
    try:
        probe = ray.remote(num_cpus=0)(probe_node)
        refs = [(n["NodeManagerAddress"], probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                 .remote(os.getcwd(), inputs, str(shared_out) if shared_out else None, token)) for n in nodes]
        for address, ref in refs:
            try:
                problems = ray.get(ref)
            except Exception as err:  # the node cannot run this package at all
                raise UsageError(f"Ray node {address} cannot run a probe task ({_why(err)}): install this package "
                                 "there (pip install -e '.[ray]')") from None
            if problems:
                raise UsageError(f"Ray node {address}: {problems[0]}: use paths that every node mounts"
                                 + (", or [ray] results = \"driver\"" if shared_out is not None else ""))
    except BaseException:
        if made:
            shutil.rmtree(made[-1], ignore_errors=True)  # the highest directory the marker needed, and all below
        raise
    finally:
        if shared_out is not None:
            (shared_out / f".ray-probe-{token}").unlink(missing_ok=True)


# --------------------------------------------------------------------------- the task


_contexts = Contexts()  # one model per worker process, reused by the next task of the same model


def run_task(spec: RunSpec, identity: dict[str, Any], shared_out: str | None, cwd: str,
             command: list[str]) -> dict[str, Any]:
    """Run one spec on this worker: into the shared ``--out``, or into scratch whose files go back. The spec is
    resolved here, where its relative paths and its device mean what they mean on this node."""
    import dataclasses

    import ray

    from ..storage.atomic_files import scratch_path
    from .runner import execute

    if Path(cwd).is_dir():
        os.chdir(cwd)  # relative model and text paths mean what they meant on the driver (probed)
    device = getattr(spec.options, "device", "cpu")
    if device == "auto" or device.startswith("cuda"):
        # the GPU Ray assigned is this process's cuda:0; a task that reserved none runs on the CPU
        options = get_study(spec.study).on_device(spec.options, "cuda" if ray.get_gpu_ids() else "cpu")
        spec = dataclasses.replace(spec, options=options)
    run = resolve(spec)
    if run.study.computation(run.identity) != run.study.computation(identity):
        raise UsageError(f"node {socket.gethostname()} would compute another configuration than the driver "
                         f"({identity_difference(identity, run.identity)}): install the same version of this package on every node")
    provenance = {"command": command, "backend": {"name": "ray", "node": socket.gethostname(), "ray": ray.__version__}}
    if run.identity != identity:
        provenance["identity_on_node"] = run.identity
    if shared_out is not None:
        run_dir, _ = execute(run, shared_out, _contexts, force=True, provenance=provenance, identity=identity)
        return {"run_dir": str(run_dir), "files": None}
    # one scratch directory per worker process: the next task's scratch_path removes it if this one is killed
    scratch = scratch_path(Path(tempfile.gettempdir()) / "mech-interp-ray-run")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        run_dir, _ = execute(run, scratch, _contexts, force=True, provenance=provenance, identity=identity)
        files = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
        return {"run_dir": str(run_dir.relative_to(scratch)), "files": files}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def publish(out: Path, run: ResolvedRun, identity: dict[str, Any], files: dict[str, bytes]) -> Path:
    """Write a run that a task returned under ``out``, as a local run is published."""
    from ..viz.writing import ensure_plotly_js

    if any(name.endswith(".html") for name in files):
        ensure_plotly_js(out)  # the figures' relative link to the results root's plotly.min.js
    writer = RunWriter(run.run_dir(out), out, identity)
    try:
        return writer.publish_files(files)
    except BaseException:
        writer.discard()
        raise


# --------------------------------------------------------------------------- the driver


def _connect(address: str | None):
    import ray

    if ray.is_initialized():  # a session the caller opened (a notebook, a test): used as it is
        if address is not None:
            print(f"note: --address {address} not used: this process is already connected to a Ray session", flush=True)
        return ray, False
    given = f"--address {address}" if address else f"RAY_ADDRESS={os.environ.get('RAY_ADDRESS', '')}"
    why = _unanswered(address)
    if why is not None:
        raise UsageError(f"{given}: no Ray cluster answers there ({why}): start one with 'ray start --head', or "
                         "leave --address out (and RAY_ADDRESS unset) to start a local one")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except ConnectionError as err:
        found = "no running Ray cluster was found" if (address or "auto") == "auto" else "no Ray cluster answers there"
        raise UsageError(f"{given}: {found}: start one with 'ray start --head', or leave --address out "
                         f"(and RAY_ADDRESS unset) to start a local one ({reason(err)})") from None
    return ray, True


def _env_vars() -> dict[str, str]:
    """The driver's settings that change what a task writes or reads, for workers started elsewhere."""
    forwarded = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    return {**forwarded, "TQDM_DISABLE": "1"}


def run_batch_on_ray(config: Path, out: str | Path, force: bool, address: str | None, max_retries: int,
                     studies: tuple[str, ...] | None = None) -> int:
    from tqdm.auto import tqdm

    from .batch import expand

    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise UsageError(f"--max-retries {max_retries!r}: expected an integer >= 0")
    check_address(address)
    check_ray_installed()
    runs = expand(config, studies, check_devices=False)  # the nodes' devices are Ray's to match
    settings = read_ray_settings(config, runs)
    if settings.out is not None:
        print(f"note: results go to [ray] out = {settings.out} (--out {out} is not used)", flush=True)
    out = (settings.out or Path(out)).resolve()
    shared_out = out if settings.results == "shared" else None
    inputs = local_inputs(runs)

    todo = []
    for run in runs:
        state, why = ("new", "") if force else run_state(run, out)
        if state == "stale":
            print(f"[rerun] {run.run_dir(out)}: {why}", flush=True)
        elif state == "done":
            print(f"[skip] {run.run_dir(out)} is complete", flush=True)
        if state != "done":
            todo.append(run)
    skipped = len(runs) - len(todo)
    if not todo:
        print(f"{_runs(len(runs))}: 0 run now, {skipped} already complete")
        return 0
    needs = {run.run_dir(out): resources_for(run, settings.resources) for run in todo}
    identities = {run.run_dir(out): run.identity for run in todo}  # as submitted: what skip/resume reads later

    ray, started = _connect(address)
    try:
        check_cluster(ray, {str(run): need for run, need in needs.items()}, inputs, shared_out)
        resources = ray.cluster_resources()
        if resources.get("GPU", 0) and any(s.options.device == "auto" and not needs[s.run_dir(out)].num_gpus for s in todo):
            print("note: runs with device 'auto' reserve no GPU, so they run on the CPU: give them device = \"cuda\" "
                  "(or num_gpus in [ray.resources]) to use the cluster's GPUs", flush=True)
        sized = {m for m, values in settings.resources.items() if "memory_gb" in values}
        unknown = [] if "*" in sized else sorted({s.options.model for s in todo if s.study.weight_bytes(s) is None} - sized)
        if unknown:
            print(f"note: the size of {', '.join(unknown)} is unknown until it loads, so its tasks reserve 1 GiB: "
                  "give memory_gb in [ray.resources] for it", flush=True)
        if shared_out is not None:
            from ..viz.writing import ensure_plotly_js

            ensure_plotly_js(shared_out)  # once, here: writers on other nodes cannot tell a live scratch file from a dead one
        results_where = f"shared --out {out} (every node writes there)" if shared_out else f"{out} on this machine (tasks send their files back)"
        print(f"ray: {_runs(len(todo))} on {resources.get('CPU', 0):g} CPUs / {resources.get('GPU', 0):g} GPUs; "
              f"results -> {results_where}", flush=True)
        # a reused worker process keeps the first GPU it was given: one GPU task per process
        tasks = {False: ray.remote(run_task), True: ray.remote(max_calls=1)(run_task)}
        pending = {}
        for run in todo:
            run_dir, need = run.run_dir(out), needs[run.run_dir(out)]
            ref = tasks[need.num_gpus > 0].options(name=f"mech-interp:{run_dir.relative_to(out)}", max_retries=max_retries,
                               retry_exceptions=False, runtime_env={"env_vars": _env_vars()}, **need.ray_options()
                               ).remote(run.spec, identities[run_dir], str(shared_out) if shared_out else None,
                                        os.getcwd(), list(sys.argv))
            pending[ref] = run
        failed, refused = [], []
        with tqdm(total=len(todo), desc="runs", unit="run") as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                run = pending.pop(ready[0])
                run_dir = run.run_dir(out)
                try:
                    result = ray.get(ready[0])
                    if result["files"] is not None:
                        publish(out, run, identities[run_dir], result["files"])
                    tqdm.write(f"[done] {run_dir}")
                except Exception as err:  # a failed or killed task: reported, the others go on
                    bad_input = isinstance(getattr(err, "cause", err), UsageError)
                    (refused if bad_input else failed).append(run_dir)
                    tqdm.write(f"[failed] {run_dir}: {'bad input: ' if bad_input else ''}{_why(err)}")
                bar.update()
    finally:
        if started:
            ray.shutdown()
    n_failed = len(failed) + len(refused)
    advice = [f"{len(failed)} can be retried: run the same command again"] if failed else []
    advice += [f"{len(refused)} refused, which a rerun repeats: see [failed] above"] if refused else []
    print(f"{_runs(len(runs))}: {len(todo) - n_failed} run now, {skipped} already complete, {n_failed} failed"
          + (f" ({'; '.join(advice)})" if advice else ""))
    return EXIT_FAILED if n_failed else 0


def _runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def _why(err: Exception) -> str:
    cause = getattr(err, "cause", None)  # RayTaskError wraps the task's own exception
    shown = cause if isinstance(cause, BaseException) else err
    lines = [line for line in str(shown).splitlines() if line.strip()]
    return f"{type(shown).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
