"""How far the demo's MAE is from converged: the same simulated screen, the same MAE trained for
more steps, and the raw-token probe of every layer after each, through the workflow's stages.

    # here, where Snakemake is installed: the demo config with the schema's defaults, as JSON
    python benchmarks/paper_scale.py resolve config/config.yaml > demo.json
    # anywhere with torch (a GPU makes the longer runs affordable)
    python benchmarks/mae_convergence.py demo.json --steps 1000 4000 --device cuda --out DIR
    # a sweep of steps, patch size and masking ratio (STEPS:PATCH:MASK per run), e.g. on CPU
    python benchmarks/mae_convergence.py demo.json --runs 1000:8:0.75 1000:16:0.75 \
        1000:8:0.5 --device cpu --out DIR

For each run (warm-up and every other MAE setting as in the config; the cosine learning-rate
schedule spans the whole run, so each length is its own run) it trains the MAE on the simulated
`cellpainting` screen, extracts every layer's tokens and probes them on every task as
`choose_layer` does. Writes ``DIR/mae_convergence.csv`` (steps, patch size, mask ratio, seconds,
final loss, task, layer, BTA) and prints the best layer's BTA per task and run. The final loss
is not comparable between patch sizes or masking ratios (other targets); the probe is.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pandas as pd

DATASET = "cellpainting"


def main() -> None:
    from cellconcepts.evaluate.probing import ProbeSettings
    from cellconcepts.stages.embed import choose_layer, embed_images, train_mae
    from cellconcepts.stages.simulate import simulate_cellpainting
    from cellconcepts.store import layout

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", help="the JSON that `paper_scale.py resolve` printed")
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument(
        "--runs", nargs="+", help="STEPS:PATCH:MASK per run (replaces --steps)", default=None
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", required=True)
    parser.add_argument("--gene-sets", help="GMT file of the screen's genes (default: pyenrichr's)")
    parser.add_argument("--work", help="where the images and encoders go (default OUT/work)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = json.loads(Path(args.settings).read_text())
    dataset = config["datasets"][DATASET]
    microscopy = dataset["microscopy"]
    out = Path(args.out)
    work = Path(args.work or out / "work")
    out.mkdir(parents=True, exist_ok=True)
    names = (layout.IMAGES, layout.IMAGE_OBS, layout.MASKS, layout.CELLS, layout.GROUPS)
    images = layout.ImageFiles(*(work / "images" / name for name in names))
    work.joinpath("images").mkdir(parents=True, exist_ok=True)
    simulate_cellpainting(
        images=images.images,
        image_obs=images.obs,
        masks=images.masks,
        cells=images.cells,
        groups=images.groups,
        simulation={**microscopy["simulate"], "gene_sets_path": args.gene_sets},
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    base = microscopy["model"]["architecture"]
    layers = list(range(1, base["depth"] + 1))
    probe_keys = ProbeSettings.__dataclass_fields__
    probe = {k: v for k, v in config["evaluate"]["probe"].items() if k in probe_keys}
    rows = []
    mae_base = microscopy["model"]["mae"]
    runs = [
        (int(steps), int(patch), float(mask))
        for steps, patch, mask in (r.split(":") for r in args.runs or [])
    ] or [(steps, base["patch_size"], mae_base.get("mask_ratio", 0.75)) for steps in args.steps]
    for steps, patch, mask in runs:
        architecture = {**base, "patch_size": patch}
        mae = {**mae_base, "steps": steps, "mask_ratio": mask}
        run = work / f"mae_{steps}_p{patch}_m{mask:g}"
        encoder = run / "encoder"
        encoder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        train_mae(
            images=images.images,
            image_obs=images.obs,
            encoder_config=encoder / layout.ENCODER_CONFIG,
            encoder_weights=encoder / layout.ENCODER_WEIGHTS,
            history=run / "history.csv",
            architecture=architecture,
            mae=mae,
            checkpoint=run / "mae.pt",
            execution={"device": args.device},
        )
        seconds = time.perf_counter() - start
        history = pd.read_csv(run / "history.csv")
        embed_images(
            images=images.images,
            image_obs=images.obs,
            encoder=encoder / layout.ENCODER_WEIGHTS,
            encoder_config=encoder / layout.ENCODER_CONFIG,
            layer_tokens=run / "layer_tokens.npy",
            layers=layers,
            architecture=architecture,
            execution={"device": args.device, "batch_size": 256},
        )
        choose_layer(
            image_obs=images.obs,
            layer_tokens=run / "layer_tokens.npy",
            tokens=run / "tokens.npy",
            obs=run / "obs.parquet",
            choice=run / "layer.json",
            table=[run / f"layer_probe{ext}" for ext in (".csv", ".md", ".tex")],
            figure=[run / f"layer_probe{ext}" for ext in (".png", ".pdf")],
            layers=layers,
            layer=microscopy["layer"],
            layer_task=microscopy["layer_task"],
            tasks=dataset["tasks"],
            control=dataset.get("control"),
            split=dataset.get("split", {}),
            probe=probe,
            min_label_size=config["evaluate"]["min_label_size"],
        )
        probes = pd.read_csv(run / "layer_probe.csv")
        tail = history["loss"].tail(max(1, len(history) // 20)).mean()
        for record in probes.to_dict("records"):
            rows.append(
                {
                    "steps": steps,
                    "patch_size": patch,
                    "mask_ratio": mask,
                    "device": args.device,
                    "train_seconds": seconds,
                    "final_loss": float(tail),
                    **record,
                }
            )
        table = pd.DataFrame(rows)
        table.to_csv(out / "mae_convergence.csv", index=False)
        mine = (table.steps == steps) & (table.patch_size == patch) & (table.mask_ratio == mask)
        best = table[mine].groupby("task")["bta"].max()
        print(f"steps={steps} patch={patch} mask={mask:g}: {seconds:.0f} s, loss {tail:.4f}")
        print(best.to_string(), flush=True)


if __name__ == "__main__":
    main()
