"""Quality against the peers: what cellconcepts' ICFL and TopK, overcomplete's TopKSAE,
BatchTopKSAE, MpSAE and OMPSAE, and sae-lens' TopK and matching-pursuit SAEs recover from the
demo's synthetic superposition, at equal non-zeros per token, equal steps and equal wall time,
with and without control whitening.

    bash benchmarks/peers/setup.sh            # overcomplete's environment (once)
    bash benchmarks/peers/setup.sh sae-lens   # sae-lens' environment (once)
    PEERS=benchmarks/peers/.venv/bin/python SAE_LENS=benchmarks/peers/.venv-sae-lens/bin/python
    export PYTHONPATH=workflow DIR=benchmarks/results/peers_quality
    $PEERS benchmarks/peers_quality.py run --whitening pca --out $DIR/peers_quality_pca.csv
    $PEERS benchmarks/peers_quality.py run --whitening none --equal-time-sim-seeds \
        --out $DIR/peers_quality_none.csv
    $SAE_LENS benchmarks/peers_quality.py run --whitening pca --models "sae-lens TopK" \
        "sae-lens MatchingPursuit" --equal-time-sim-seeds --out $DIR/peers_quality_saelens_pca.csv
    # the same with --whitening none -> $DIR/peers_quality_saelens_none.csv, then
    python benchmarks/peers_quality.py summary \
        $DIR/peers_quality_{pca,none,saelens_pca,saelens_none}.csv \
        --out $DIR/peers_quality_summary.csv

Data: the demo's synthetic superposition (config/config.yaml: 20,000 tokens, d 64, 128 true
atoms, 40 perturbations of 2 atoms) at simulator seeds 0 (the demo's), 1 and 2; its train split
trains, its test split (2 held-out batches) scores. Whitening is fitted on the control tokens as
the workflow does (``pca`` or ``none``, which only centres; rows then have unit norm) and every
model sees the same model-space tokens. M 512 features, k 8 non-zeros per token (ICFL 4 x 2),
the demo's dictionary; three model seeds per simulator seed.

Training, each model as its library ships it (never tuned here): cellconcepts' models through
the workflow's own `train_dictionary` (Adam, lr 1e-3, the schema's defaults: b_pre learned, ICFL
re-draws correlated columns); overcomplete's with the settings of its README's example and of
its `train_sae` (Adam, lr 5e-4, mean squared error, gradient norm clipped at 1.0; the models'
own defaults: OMPSAE 10 NNLS iterations); sae-lens' with its own `SAETrainer` and the settings
of its `synthetic.train_toy_sae` (lr 3e-4, constant) and its models' defaults. Equal steps:
``--steps`` steps of ``--batch`` tokens for everyone (default 2,000 of 512: the demo's steps, a
quarter of its batch of 2,048, so that the pursuits fit the CPU budget). Equal wall time (on
the simulator seeds of ``--equal-time-sim-seeds``, default the demo's; none for the run without
whitening): each model's steps scaled by ICFL's seconds per step over its own, both measured in
the equal-steps run of the same process, so each trains about as long as ICFL.

Scores, all on the same tokens for every model:
- ``atoms_recovered``: true atoms (in model space) with a learned direction at |cos| >= 0.9;
- ``heldout_fvu``: the test tokens' squared reconstruction error over their squared deviation
  from the training mean (model space);
- ``dead``: features active on fewer than 1e-5 of the tokens of the last 1,000 steps (the
  paper's rule, the workflow's tracker for cellconcepts, the same count for the peers);
- the perturbation task's held-out, null-based selectivity (`evaluate.label_scores`, as the
  workflow: feature chosen on the training batches, scored on the held-out batches, 1,000 label
  permutations within batches, BH at 5 %): ``heldout_avg`` (mean over labels),
  ``labels_above_null`` (of ``n_labels``) and ``heldout_ap`` (mean average precision; chance is
  the label's share of the test tokens).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import yaml

from cellconcepts.defaults import schema_default

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "config/config.yaml").read_text())  # the demo's settings
FEATURES = DEMO["dictionary"]["n_features"]
SPARSITY = DEMO["dictionary"]["sparsity"][0]
ATOMS_PER_ITERATION = DEMO["dictionary"]["icfl"]["atoms_per_iteration"]
OUR_LR = DEMO["dictionary"]["train"]["lr"]
MODELS = ("cellconcepts ICFL", "cellconcepts TopK", "overcomplete TopKSAE",
          "overcomplete BatchTopKSAE", "overcomplete MpSAE", "overcomplete OMPSAE")  # fmt: skip
SAE_LENS = ("sae-lens TopK", "sae-lens MatchingPursuit")  # in their own environment
PEER_LR, PEER_CLIP = 5e-4, 1.0  # overcomplete's README example and train_sae's default
SAE_LENS_LR = 3e-4  # sae_lens.synthetic.train_toy_sae's default (and SAETrainerConfig's)
TASK = next(t for t in DEMO["datasets"]["synthetic"]["tasks"] if t["name"] == "perturbation")
RECOVERY_THRESHOLD = schema_default("evaluate.atom_recovery_threshold")


def model_space(seed: int, whitening: str) -> dict[str, Any]:
    """The simulated tokens at simulator ``seed``, whitened on the controls, with the true atoms
    in the same space and the train and test rows."""
    from cellconcepts.dictionary.whitening import fit_whitening
    from cellconcepts.sources.superposition import simulate_superposition

    simulation = DEMO["datasets"]["synthetic"]["synthetic"]
    data = simulate_superposition(**{**simulation, "seed": seed})
    controls = np.flatnonzero(data.obs["is_control"].to_numpy())
    transform = fit_whitening(
        data.tokens, controls, whitening, eps_relative=schema_default("whitening.eps_relative")
    )
    split = data.obs["split"].to_numpy()
    return {
        "tokens": np.asarray(transform.transform(data.tokens), dtype=np.float32),
        "obs": data.obs.reset_index(drop=True),
        "atoms": transform.directions_to_model_space(data.atoms.T).T,
        "train": np.flatnonzero(split == "train"),
        "test": np.flatnonzero(split == "test"),
    }


def build(name: str, dim: int, seed: int, batch: int) -> torch.nn.Module:
    """An untrained model; overcomplete's BatchTopKSAE keeps ``top_k`` activations per batch
    (not per token), so it gets k x batch: k per token on average."""
    from cellconcepts.dictionary.models import build_model

    if name == "cellconcepts ICFL":
        return build_model("icfl", dim, FEATURES, SPARSITY, seed=seed,
                           atoms_per_iteration=ATOMS_PER_ITERATION)  # fmt: skip
    if name == "cellconcepts TopK":
        return build_model("topk", dim, FEATURES, SPARSITY, seed=seed)
    torch.manual_seed(seed)
    if name == "sae-lens TopK":
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

        return TopKTrainingSAE(TopKTrainingSAEConfig(d_in=dim, d_sae=FEATURES, k=SPARSITY))
    if name == "sae-lens MatchingPursuit":
        from sae_lens.saes.matching_pursuit_sae import (
            MatchingPursuitTrainingSAE,
            MatchingPursuitTrainingSAEConfig,
        )

        config = MatchingPursuitTrainingSAEConfig(d_in=dim, d_sae=FEATURES, max_iterations=SPARSITY)
        return MatchingPursuitTrainingSAE(config)
    from overcomplete import sae

    peer = name.split()[1]
    if peer == "TopKSAE":
        return sae.TopKSAE(dim, FEATURES, top_k=SPARSITY)
    if peer == "BatchTopKSAE":
        return sae.BatchTopKSAE(dim, FEATURES, top_k=SPARSITY * batch)
    return getattr(sae, peer)(dim, FEATURES, k=SPARSITY)


def train_ours(
    model: torch.nn.Module, space: dict, steps: int, batch: int, seed: int
) -> np.ndarray:
    """The workflow's training loop; the dead mask of its last 1,000 steps."""
    from cellconcepts.dictionary.training import TrainConfig, train_dictionary

    config = TrainConfig(steps=steps, batch_size=batch, lr=OUR_LR, seed=seed, device="cpu",
                         log_every=steps, checkpoint_every=10**9)  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        where = Path(work)
        result = train_dictionary(
            model, space["tokens"], space["train"], None, config,
            checkpoint_dir=where, metrics_path=where / "metrics.csv",
        )  # fmt: skip
    return result.dead_mask


def batches(space: dict, batch: int, seed: int):
    """Training batches drawn without replacement, epoch by epoch, as float32 tensors."""
    rng = np.random.default_rng(seed)
    rows, order, position = space["train"], np.empty(0, dtype=np.int64), 0
    while True:
        if position + batch > order.shape[0]:
            order, position = rng.permutation(rows), 0
        yield torch.from_numpy(space["tokens"][np.sort(order[position : position + batch])])
        position += batch


class DeadCounter:
    """Activations per feature over the last ``dead_window`` steps of ``steps``; dead: active on
    fewer than ``dead_fraction`` of those tokens (the schema's values, the paper's rule)."""

    def __init__(self, steps: int) -> None:
        self.first = steps - schema_default("dictionary.train.dead_window")
        self.fraction = schema_default("dictionary.train.dead_fraction")
        self.active, self.seen, self.step = torch.zeros(FEATURES, dtype=torch.int64), 0, 0

    def update(self, codes: torch.Tensor) -> None:
        if self.step >= self.first:
            self.active += (codes.detach().to_dense() != 0).sum(0)
            self.seen += codes.shape[0]
        self.step += 1

    def dead(self) -> np.ndarray:
        return (self.active.double() < self.fraction * self.seen).numpy()


def train_peer(
    model: torch.nn.Module, space: dict, steps: int, batch: int, seed: int
) -> np.ndarray:
    """overcomplete's `train_sae` step (MSE, clipping, Adam); the dead mask."""
    optimiser = torch.optim.Adam(model.parameters(), lr=PEER_LR)
    counter = DeadCounter(steps)
    model.train()
    for _, x in zip(range(steps), batches(space, batch, seed), strict=False):
        optimiser.zero_grad()
        _, z, x_hat = model(x)
        loss = (x - x_hat).square().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), PEER_CLIP)
        optimiser.step()
        counter.update(z)
    return counter.dead()


def train_sae_lens(
    model: torch.nn.Module, space: dict, steps: int, batch: int, seed: int
) -> np.ndarray:
    """sae-lens' own trainer with the settings of its `synthetic.train_toy_sae`; the dead mask."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    config = SAETrainerConfig(
        total_training_samples=steps * batch, train_batch_size_samples=batch, lr=SAE_LENS_LR,
        lr_end=SAE_LENS_LR, lr_scheduler_name="constant", dead_feature_window=1000,
        feature_sampling_window=2000, device="cpu", checkpoint_path=None,
        logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=2**31 - 1),
    )  # fmt: skip
    trainer = SAETrainer(cfg=config, sae=model, data_provider=batches(space, batch, seed))
    counter, train_step = DeadCounter(steps), trainer._train_step

    def counted(**kwargs: Any) -> Any:
        output = train_step(**kwargs)
        counter.update(output.feature_acts)
        return output

    trainer._train_step = counted
    trainer.fit()
    return counter.dead()


def codes_and_reconstruction(model: torch.nn.Module, tokens: np.ndarray) -> tuple:
    """Sparse codes of every token and their reconstructions, in the model's eval mode."""
    model.eval()
    codes, recon = [], []
    with torch.no_grad():
        for start in range(0, tokens.shape[0], 4096):
            x = torch.from_numpy(tokens[start : start + 4096])
            z = model.encode(x)
            if isinstance(z, tuple):  # overcomplete: (pre-codes, codes)
                z = z[1]
            z = z.to_dense()
            codes.append(sp.csr_matrix(z.numpy()))
            recon.append(model.decode(z).numpy())
    return sp.vstack(codes).tocsr(), np.concatenate(recon)


def dictionary_columns(model: torch.nn.Module) -> np.ndarray:
    """The learned directions as (d, M) columns."""
    if hasattr(model, "selected_loss"):
        from cellconcepts.dictionary.models import decoder_directions

        return decoder_directions(model)
    if hasattr(model, "get_dictionary"):  # overcomplete
        return model.get_dictionary().detach().numpy().T
    return model.W_dec.detach().numpy().T  # sae-lens: (M, d)


def scores(model: torch.nn.Module, space: dict, dead: np.ndarray) -> dict[str, float]:
    from cellconcepts.evaluate.label_scores import SignificanceSettings, label_score_tables
    from cellconcepts.evaluate.probing import ProbeSettings
    from cellconcepts.evaluate.recovery import atom_recovery

    codes, recon = codes_and_reconstruction(model, space["tokens"])
    test = space["tokens"][space["test"]]
    centre = space["tokens"][space["train"]].mean(axis=0)
    fvu = np.square(test - recon[space["test"]]).sum() / np.square(test - centre).sum()
    recovered = atom_recovery(space["atoms"], dictionary_columns(model), RECOVERY_THRESHOLD)
    keys = ("permutations", "seed", "fdr", "matched_frequency")
    null = SignificanceSettings(**{k: schema_default(f"evaluate.significance.{k}") for k in keys})
    smallest = schema_default("evaluate.min_label_size")
    table, _ = label_score_tables(
        codes, space["obs"], [TASK], ProbeSettings(), null, min_label_size=smallest
    )
    score = {name: table[table["score"] == name] for name in ("heldout_avg", "heldout_ap")}
    return {
        "atoms_recovered": int(recovered["recovered"].sum()),
        "n_atoms": len(recovered),
        "heldout_fvu": float(fvu),
        "nnz_per_token": codes.nnz / codes.shape[0],
        "dead": int(dead.sum()),
        "heldout_avg": float(score["heldout_avg"]["value"].mean()),
        "labels_above_null": int(score["heldout_avg"]["above_null"].sum()),
        "n_labels": len(score["heldout_avg"]),
        "heldout_ap": float(score["heldout_ap"]["value"].mean()),
        "heldout_ap_chance": float(score["heldout_ap"]["chance"].mean()),
    }


def train_and_score(name: str, space: dict, steps: int, batch: int, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = build(name, space["tokens"].shape[1], seed, batch)
    library = name.split()[0]
    train = {"cellconcepts": train_ours, "sae-lens": train_sae_lens}.get(library, train_peer)
    start = time.perf_counter()
    dead = train(model, space, steps, batch, seed)
    seconds = time.perf_counter() - start
    return {"model": name, "steps": steps, "train_seconds": seconds,
            "seconds_per_step": seconds / steps, **scores(model, space, dead)}  # fmt: skip


def run(args: argparse.Namespace) -> None:
    from importlib.metadata import PackageNotFoundError, version

    torch.set_num_threads(args.threads)
    versions = []
    for package in ("torch", "overcomplete", "sae-lens"):
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    print(f"{', '.join(versions)}, {platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s), models {args.models}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for sim_seed in args.sim_seeds:
        space = model_space(sim_seed, args.whitening)
        for seed in args.seeds:
            design = {"sim_seed": sim_seed, "whitening": args.whitening, "model_seed": seed,
                      "batch": args.batch}  # fmt: skip
            equal_steps = {}
            for name in args.models:
                equal_steps[name] = train_and_score(name, space, args.steps, args.batch, seed)
                rows.append({**design, "budget": "equal steps", **equal_steps[name]})
                print(pd.DataFrame([rows[-1]]).to_string(index=False), flush=True)
                pd.DataFrame(rows).to_csv(args.out, index=False)
            if sim_seed not in args.equal_time_sim_seeds or MODELS[0] not in args.models:
                continue
            reference = equal_steps["cellconcepts ICFL"]["seconds_per_step"]
            for name in args.models:
                if name == "cellconcepts ICFL":
                    row = equal_steps[name]
                else:
                    own = equal_steps[name]["seconds_per_step"]
                    steps = max(1, round(args.steps * reference / own))
                    row = train_and_score(name, space, steps, args.batch, seed)
                rows.append({**design, "budget": "equal wall time", **row})
                print(pd.DataFrame([rows[-1]]).to_string(index=False), flush=True)
                pd.DataFrame(rows).to_csv(args.out, index=False)


HIGHER_IS_BETTER = {"atoms_recovered_fraction": True, "heldout_fvu": False,
                    "dead_fraction": False, "heldout_avg": True, "labels_above_null": True,
                    "heldout_ap": True}  # fmt: skip
PAIR = ["budget", "whitening", "sim_seed", "model_seed"]


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * frame.shape[1]]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.to_numpy()]
    return "\n".join(lines)


def summary(args: argparse.Namespace) -> None:
    """Per budget, whitening and model: mean +/- sd over simulator and model seeds; and each
    model against ICFL on the same simulator and model seed (paired differences, and in how
    many of the pairs ICFL is better)."""
    frame = pd.concat([pd.read_csv(path) for path in args.tables], ignore_index=True)
    frame["atoms_recovered_fraction"] = frame["atoms_recovered"] / frame["n_atoms"]
    frame["dead_fraction"] = frame["dead"] / FEATURES
    metrics = [*HIGHER_IS_BETTER, "steps", "seconds_per_step"]
    keys = ["budget", "whitening", "model"]
    grouped = frame.groupby(keys, sort=False)[metrics]
    table = grouped.mean().join(grouped.std(), rsuffix="_sd").join(grouped.size().rename("n"))
    table = table.reset_index()
    table.to_csv(args.out, index=False)
    shown = table[keys + ["n"]].copy()
    for metric in metrics:
        shown[metric] = [
            f"{m:.4g} +/- {s:.2g}"
            for m, s in zip(table[metric], table[f"{metric}_sd"], strict=True)
        ]
    print(markdown(shown))
    icfl = frame[frame["model"] == MODELS[0]].set_index(PAIR)[list(HIGHER_IS_BETTER)]
    rows = []
    for (budget, white, name), group in frame.groupby(keys, sort=False):
        if name == MODELS[0]:
            continue
        paired = group.set_index(PAIR)[list(HIGHER_IS_BETTER)].join(icfl, rsuffix="_icfl")
        paired = paired.dropna()
        for metric, higher in HIGHER_IS_BETTER.items():
            difference = paired[metric] - paired[f"{metric}_icfl"]
            better = (difference < 0) if higher else (difference > 0)
            rows.append({"budget": budget, "whitening": white, "model": name, "metric": metric,
                         "difference_mean": difference.mean(), "difference_sd": difference.std(),
                         "pairs": len(difference), "pairs_icfl_better": int(better.sum()),
                         "pairs_tied": int((difference == 0).sum())})  # fmt: skip
    against = pd.DataFrame(rows)
    against.to_csv(args.out.with_name(args.out.stem + "_vs_icfl.csv"), index=False)
    print()
    print(markdown(against.round(4)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run", help="train and score every model")
    runner.add_argument("--whitening", choices=["pca", "none"], required=True)
    runner.add_argument("--sim-seeds", nargs="+", type=int, default=[0, 1, 2])
    runner.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="model seeds")
    runner.add_argument("--models", nargs="+", choices=[*MODELS, *SAE_LENS], default=list(MODELS),
                        help="sae-lens' need its own environment (see above)")  # fmt: skip
    runner.add_argument("--steps", type=int, default=2000)
    runner.add_argument("--batch", type=int, default=512)
    runner.add_argument("--threads", type=int, default=1)
    runner.add_argument("--equal-time-sim-seeds", nargs="*", type=int, default=[0],
                        help="simulator seeds that also get the equal-wall-time runs")  # fmt: skip
    runner.add_argument("--out", type=Path, required=True)
    summariser = commands.add_parser("summary", help="mean +/- sd of run tables")
    summariser.add_argument("tables", nargs="+", type=Path)
    summariser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    run(args) if args.command == "run" else summary(args)


if __name__ == "__main__":
    main()
