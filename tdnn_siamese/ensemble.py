"""Training an ensemble: ``model.members`` encoders trained apart, then validated and saved as one model.

One model's validation EER moves with its seed alone by more than most
settings move it (README, "Results" and "Ablation"): which initial weights,
which episodes. An ensemble averages that away. Each member is an ordinary
training run of one encoder (:func:`tdnn_siamese.train.train`) under
``out/members/mK``, with ``train.member = K``: the same writers' split and
validation draws as the others (all from ``train.seed``), its own initial
weights, episodes and augmentation. The members train at once, each in a
process of its own with an equal share of the threads: a single run uses
two cores poorly (29 s an epoch alone with two threads, 32-34 s with one
while another trains beside it), so two members take about the time of one.

The trained members are then put side by side (:class:`TDNNEnsemble`): a
query's distance to a reference is the mean of the members' soft-DTW
distances, each member aligning its own frames. The ensemble is validated
like one model, on the same validation writers and draws: validation
chooses its scoring strategy, sets its threshold and keeps its calibration
scores, and ``out/model.pt`` holds it, ready for ``evaluate``, ``enroll``
and ``verify``. Every member folder resumes on its own after a crash, so
``--resume`` retrains only what did not finish.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

from .atomic import atomic_write_json, atomic_write_text
from .config import ConfigError
from .model import Checkpoint, TDNNEnsemble, load_checkpoint, save_checkpoint

if TYPE_CHECKING:  # train imports this module: only the type checker reads this import
    from .train import RunConfig

logger = logging.getLogger(__name__)


def member_configs(cfg: RunConfig) -> list[RunConfig]:
    """Each member's own run configuration: one encoder of the ensemble's architecture, ``train.member`` = its number."""
    from .train import RunConfig

    return [RunConfig(cfg.features, cfg.model.member, dataclasses.replace(cfg.train, member=m)) for m in range(cfg.model.members)]


def train_ensemble(data: str | os.PathLike, out: str | os.PathLike, cfg: RunConfig, *, resume: bool = False,
                   progress: Callable[..., None] | None = None) -> Path:
    """Train the members (at once, one process each), validate them together and write ``out/model.pt``,
    ``out/metrics.csv`` (each member's kept epoch and the ensemble's validation) and ``out/config.json``."""
    from .train import config_difference, prepare, provenance, resolve_init, validate

    out = Path(out)
    model_path, config_path, members_dir = out / "model.pt", out / "config.json", out / "members"
    if not resume and (model_path.exists() or members_dir.exists()):
        raise ConfigError(f"{out} already holds a run (model.pt or members/); pass --resume to continue it or choose another --out")
    cfgs = member_configs(cfg)
    if not resume:
        resolve_init(cfgs[0])  # a missing or unfit initial model: said before anything is written (members resolve it again)
    out.mkdir(parents=True, exist_ok=True)
    if resume and config_path.exists():
        from .train import RunConfig

        saved = RunConfig.read(config_path).to_dict()
        diff = config_difference(saved, cfg.to_dict())
        if diff is not None:
            raise ConfigError(f"{out}: the saved run has another configuration ({diff}); resume without changing settings")
    atomic_write_json(config_path, cfg.to_dict())
    prep = prepare(data, cfg, progress)  # reads and checks the corpus once, before any member starts
    dirs = [members_dir / f"m{m}" for m in range(len(cfgs))]
    threads = max(1, torch.get_num_threads() // len(cfgs))
    logger.info("training %d members at once, %d thread(s) each, in %s", len(cfgs), threads, members_dir)
    jobs = [(str(data), str(d), c.to_dict(), resume or d.exists(), threads, m) for m, (d, c) in enumerate(zip(dirs, cfgs))]
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per member: no torch state forked mid-use
    with _terminate_on_sigterm(), ctx.Pool(len(jobs)) as pool:  # killed: the pool stops its members on the way out
        failures = [f for f in pool.starmap(_member_job, jobs) if f]
    if failures:
        raise ConfigError("; ".join(failures))
    members = [load_checkpoint(d / "model.pt") for d in dirs]
    init_sha256 = _members_init(members, dirs)
    ensemble = TDNNEnsemble.of([ck.encoder for ck in members]).eval()
    val = validate(ensemble, prep, cfg)
    rows = [{"member": m, "kept_epoch": ck.provenance["best_epoch"], "epochs_run": ck.provenance["epochs_run"],
             "val_eer_skilled": round(_kept_eer(d), 6), "strategy": ck.scoring} for m, (ck, d) in enumerate(zip(members, dirs))]
    rows.append({"member": "ensemble", "kept_epoch": "", "epochs_run": "", "val_eer_skilled": round(val.eer_skilled, 6),
                 "strategy": val.strategy})
    info = provenance(prep, cfg, data, max(r["epochs_run"] for r in rows[:-1]), max(r["kept_epoch"] for r in rows[:-1]), init_sha256)
    info["members"] = [{"folder": str(d), **{k: r[k] for k in ("kept_epoch", "epochs_run", "val_eer_skilled", "strategy")}}
                       for d, r in zip(dirs, rows)]
    save_checkpoint(model_path, ensemble, cfg.features, distance=cfg.train.distance, threshold=val.threshold, scoring=val.strategy,
                    calibration=val.scores, provenance=info, offset_weight=cfg.train.offset_weight)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "metrics.csv", buf.getvalue())
    logger.info("ensemble of %d: validation EER skilled %.2f%% (%s); members %s", len(rows) - 1, 100 * val.eer_skilled, val.strategy,
                ", ".join(f"{100 * r['val_eer_skilled']:.2f}%" for r in rows[:-1]))
    return model_path


def _members_init(members: list[Checkpoint], dirs: list[Path]) -> str:
    """The SHA-256 of the model file every member started from (``train.init``; "" for random weights), which the
    ensemble's provenance records as one model's does. Members that started from different files (the file behind
    ``train.init`` rebuilt between their runs) make no honest ensemble: a ConfigError naming them."""
    from .train import initial_weights

    inits = [ck.provenance.get("init_sha256", "") for ck in members]
    if len(set(inits)) > 1:
        raise ConfigError("the ensemble's members started from different initial models (" + "; ".join(
            f"{d} from {initial_weights(h)}" for d, h in zip(dirs, inits)) + "): remove the folder of the one to train again")
    return inits[0]


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """Within: SIGTERM (``kill``, a job scheduler) raises SystemExit in the parent, so the members' pool is
    terminated on the way out instead of leaving them training, orphaned, in the run folder (Ctrl-C reaches the
    whole process group anyway). Only the main thread can handle signals; elsewhere, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)  # None: not set from Python


def _exit_with_parent(poll_s: float = 1.0) -> None:
    """In a member's process: exit as soon as the parent is gone (killed with SIGKILL, which no handler sees), so that
    no orphan goes on writing a member folder that a resumed run trains again."""
    spawner = multiprocessing.parent_process()  # the pool's parent, even if it died before this member started
    parent = spawner.pid if spawner is not None else os.getppid()
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _kept_eer(run: Path) -> float:
    """A member run's validation skilled EER at its kept epoch (its metrics.csv)."""
    with open(run / "metrics.csv", newline="") as f:
        kept = [r for r in csv.DictReader(f) if r["best"] == "True"]
    return float(kept[-1]["val_eer_skilled"])


class _MemberProgress:
    """A member's epochs, one line each on stderr (the parent's progress bar cannot reach a child process)."""

    def __init__(self, member: int):
        self.member = member

    def __call__(self, event: str, *args: Any) -> None:
        if event == "epoch":
            (row,) = args
            print(f"member {self.member} epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  val EER skilled "
                  f"{100 * row['val_eer_skilled']:5.2f}%  {row['seconds']:.0f} s{' *' if row['best'] else ''}", file=sys.stderr, flush=True)


def _member_job(data: str, out: str, cfg: dict, resume: bool, threads: int, member: int) -> str:
    """Train one member in a child process; "" when it finished, else what went wrong (exceptions of every kind
    reach the parent as text: some of ours do not survive pickling)."""
    from .train import RunConfig, train

    _exit_with_parent()
    torch.set_num_threads(threads)
    try:
        train(data, out, RunConfig.from_dict(cfg), resume=resume, progress=_MemberProgress(member))
    except Exception as e:  # noqa: BLE001 (reported by the parent as a ConfigError naming the member)
        return f"member {member} ({out}): {e}"
    return ""
