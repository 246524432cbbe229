from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellconcepts.sources import cellpainting as cp
from cellconcepts.store.gene_sets import go_bp_2023_path, read_gmt
from cellconcepts.store.images import open_image_store
from cellconcepts.store.layout import ImageFiles

# 2 plates x (6 groups x 2 genes + 2 no-effect genes + 2 control wells) x 1 site = 32 images.
SMALL = dict(
    n_cell_types=2,
    plates_per_cell_type=1,
    genes_per_group=2,
    n_no_effect_genes=2,
    control_wells=2,
    sites_per_well=1,
    image_size=32,
    n_strong=3,
    progress=False,
)
# One cell type on 3 plates, enough cells per plate to measure planted effects and batch effects.
MEDIUM = dict(
    n_cell_types=1,
    plates_per_cell_type=3,
    genes_per_group=3,
    n_no_effect_genes=2,
    control_wells=4,
    sites_per_well=2,
    image_size=48,
    progress=False,
)


@pytest.fixture(scope="module")
def small() -> cp.SimulatedScreen:
    return cp.simulate_screen(**SMALL, seed=0)


@pytest.fixture(scope="module")
def medium() -> cp.SimulatedScreen:
    return cp.simulate_screen(**MEDIUM, seed=0)


@pytest.fixture(scope="module")
def gene_sets() -> dict[str, list[str]]:
    return read_gmt(go_bp_2023_path())


def _assert_screens_equal(a: cp.SimulatedScreen, b: cp.SimulatedScreen) -> None:
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    for name in ("obs", "cells", "groups"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_screens(small: cp.SimulatedScreen) -> None:
    _assert_screens_equal(small, cp.simulate_screen(**SMALL, seed=0))


def test_different_seed_gives_different_images(small: cp.SimulatedScreen) -> None:
    other = cp.simulate_screen(**SMALL, seed=1)
    assert other.images.shape == small.images.shape
    assert not np.array_equal(other.images, small.images)
    assert not np.array_equal(other.masks, small.masks)


# --------------------------------------------------------------------------- shapes and tables


def test_shapes_dtypes_and_columns(small: cp.SimulatedScreen) -> None:
    n = 2 * (6 * 2 + 2 + 2) * 1
    assert small.images.shape == (n, 6, 32, 32)
    assert small.images.dtype == np.uint16
    assert small.masks.shape == (n, 32, 32)
    assert small.masks.dtype == np.int32
    assert list(small.obs.columns) == cp.OBS_COLUMNS
    assert list(small.cells.columns) == cp.CELLS_COLUMNS
    assert list(small.groups.columns) == cp.GROUPS_COLUMNS
    assert cp.CHANNELS == ["nucleus", "er", "rna", "actin", "golgi_membrane", "mitochondria"]
    # Camera offset (500) plus background is present everywhere, and signal sits well above it.
    assert small.images.min() > 300
    assert np.percentile(small.images, 99.9) > 3000


def test_image_ids_and_plate_layout(small: cp.SimulatedScreen) -> None:
    obs = small.obs
    assert obs["image_id"].is_unique
    expected_ids = obs["plate"] + "_" + obs["well"] + "_s" + obs["site"].astype(str)
    assert (obs["image_id"] == expected_ids).all()
    assert all(re.fullmatch(r"[A-P](0[1-9]|1\d|2[0-4])", w) for w in obs["well"])
    assert sorted(obs["plate"].unique()) == ["P01", "P02"]
    assert (obs["batch"] == obs["plate"]).all()
    assert obs.groupby("plate")["cell_type"].unique().map(list).to_dict() == {
        "P01": ["HUVEC"],
        "P02": ["U2OS"],
    }
    genes = sorted(obs.loc[~obs["is_control"], "gene"].unique())
    for _, plate in obs.groupby("plate"):
        # One well per gene, control_wells non-targeting wells, no well shared.
        wells = plate.groupby("well")["gene"].unique().map(list)
        assert (wells.map(len) == 1).all()
        per_gene = wells.map(lambda g: g[0]).value_counts()
        assert per_gene[cp.CONTROL_GENE] == 2
        assert sorted(per_gene.drop(cp.CONTROL_GENE).index) == genes
        assert (per_gene.drop(cp.CONTROL_GENE) == 1).all()
    # Wells are shuffled independently per plate.
    layout = obs.set_index(["plate", "gene"])["well"]
    assert not np.array_equal(layout["P01"].sort_index(), layout["P02"].sort_index())


def test_masks_match_cells_and_obs(small: cp.SimulatedScreen) -> None:
    obs, cells = small.obs, small.cells
    assert (cells["image_id"] == obs["image_id"].to_numpy()[cells["image_index"]]).all()
    assert obs["n_cells"].sum() == len(cells) > 0
    yy, xx = np.mgrid[0:32, 0:32]
    for index, row in obs.iterrows():
        mask = small.masks[index]
        mine = cells[cells["image_index"] == index]
        labels = np.unique(mask)
        assert labels.tolist() == list(range(row["n_cells"] + 1)) or (
            row["n_cells"] == 0 and labels.tolist() == [0]
        )
        assert mine["cell_label"].tolist() == list(range(1, row["n_cells"] + 1))
        assert row["n_perturbed"] == mine["perturbed"].sum()
        for cell in mine.itertuples():
            inside = mask == cell.cell_label
            assert cell.area == inside.sum()
            assert cell.centroid_y == pytest.approx(yy[inside].mean())
            assert cell.centroid_x == pytest.approx(xx[inside].mean())


def test_controls_and_no_effect_genes_are_never_perturbed(small: cp.SimulatedScreen) -> None:
    obs = small.obs
    controls = obs[obs["is_control"]]
    assert (controls["gene"] == cp.CONTROL_GENE).all()
    assert (controls["gene_group"] == cp.CONTROL_GENE).all()
    assert (obs.loc[obs["gene"] == cp.CONTROL_GENE, "is_control"]).all()
    assert controls.groupby("plate").size().to_dict() == {"P01": 2, "P02": 2}
    inert = obs[obs["gene_group"].isin([cp.CONTROL_GENE, cp.NO_EFFECT_GROUP])]
    assert (inert["n_perturbed"] == 0).all()
    assert (inert["strength"] == 0).all() and (inert["penetrance"] == 0).all()
    assert inert["go_term"].isna().all() and inert["strong_perturbation"].isna().all()
    inert_cells = small.cells["image_index"].isin(inert.index)
    assert not small.cells.loc[inert_cells, "perturbed"].any()
    planted = obs[~obs.index.isin(inert.index)]
    assert planted["strength"].between(0.5, 1.0).all()
    assert planted["penetrance"].between(0.5, 0.9).all()
    # Partial penetrance: some cells of knock-out images are perturbed, not all.
    assert 0 < planted["n_perturbed"].sum() < planted["n_cells"].sum()


def test_planted_genes_follow_their_go_terms(
    small: cp.SimulatedScreen, gene_sets: dict[str, list[str]]
) -> None:
    groups, obs = small.groups, small.obs
    defaults = {g.effect: g for g in cp.DEFAULT_GROUPS}
    assert groups["gene_group"].tolist() == list(defaults)
    terms = dict(zip(groups["gene_group"], groups["go_term"], strict=True))
    all_genes = []
    for row in groups.itertuples():
        assert row.go_term == defaults[row.gene_group].go_term
        assert row.channel == defaults[row.gene_group].channel
        genes = row.genes.split(";")
        assert len(genes) == row.n_genes == 2
        all_genes += genes
        for gene in genes:
            assert gene in gene_sets[row.go_term]
            for other, term in terms.items():
                if other != row.gene_group:
                    assert gene not in gene_sets[term], (gene, term)
            rows = obs[obs["gene"] == gene]
            assert (rows["gene_group"] == row.gene_group).all()
            assert (rows["go_term"] == row.go_term).all()
    assert len(all_genes) == len(set(all_genes))
    planted_union = set().union(*(gene_sets[t] for t in terms.values()))
    no_effect = obs.loc[obs["gene_group"] == cp.NO_EFFECT_GROUP, "gene"].unique()
    assert len(no_effect) == 2
    assert not planted_union & set(no_effect)
    assert not set(all_genes) & set(no_effect)


def test_strong_perturbations_are_the_top_genes(small: cp.SimulatedScreen) -> None:
    per_gene = small.obs.drop_duplicates("gene").set_index("gene")
    planted = per_gene[per_gene["strength"] > 0]
    score = planted["strength"] * planted["penetrance"]
    top = set(score.sort_values(ascending=False).index[:3])
    strong = per_gene["strong_perturbation"].dropna()
    assert set(strong.index) == top
    assert (strong.index == strong.to_numpy()).all()
    obs = small.obs
    labelled = obs["strong_perturbation"].notna()
    assert (obs.loc[labelled, "strong_perturbation"] == obs.loc[labelled, "gene"]).all()
    assert set(obs.loc[labelled, "gene"]) == top


# --------------------------------------------------------------------------- design options


def test_custom_gene_sets_and_term_overrides(tmp_path: Path) -> None:
    gmt = tmp_path / "custom.gmt"
    gmt.write_text(
        "T1\t\tA\tB\tC\tX\n"  # X is shared with T2: never chosen
        "T2\t\tX\tD\tE\n"
        "T3\t\tF\tG\n"  # disjoint from T1 and T2: the no-effect pool
        "T4\t\tA\tH\n"  # overlaps T1: H is not eligible as a no-effect gene
    )
    screen = cp.simulate_screen(
        **{**SMALL, "n_cell_types": 1, "n_strong": 1},
        groups={"mito_enlarged": "T1", "nucleolar": "T2"},
        gene_sets_path=gmt,
        seed=3,
    )
    groups = screen.groups.set_index("gene_group")
    assert groups.index.tolist() == ["mito_enlarged", "nucleolar"]
    assert groups.loc["mito_enlarged", "go_term"] == "T1"
    assert groups.loc["nucleolar", "channel"] == "rna"
    assert set(groups.loc["mito_enlarged", "genes"].split(";")) < {"A", "B", "C"}
    assert set(groups.loc["nucleolar", "genes"].split(";")) == {"D", "E"}
    no_effect = screen.obs.loc[screen.obs["gene_group"] == cp.NO_EFFECT_GROUP, "gene"]
    assert set(no_effect) == {"F", "G"}


def test_group_subset_by_name() -> None:
    screen = cp.simulate_screen(**{**SMALL, "n_cell_types": 1}, groups=["large_cells"], seed=0)
    assert screen.groups["gene_group"].tolist() == ["large_cells"]
    assert set(screen.obs["gene_group"]) == {"large_cells", cp.NO_EFFECT_GROUP, cp.CONTROL_GENE}
    assert screen.obs["strong_perturbation"].dropna().nunique() == 2  # n_strong capped


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="unknown effect 'bigger_cells'"):
        cp.simulate_screen(**SMALL, groups=["bigger_cells"])
    with pytest.raises(ValueError, match="'Not A Term' not found"):
        cp.simulate_screen(**SMALL, groups={"nucleolar": "Not A Term"})
    with pytest.raises(ValueError, match="Mitochondrial Fission .* genes_per_group=100"):
        cp.simulate_screen(**{**SMALL, "genes_per_group": 100})
    with pytest.raises(ValueError, match="image_size: expected an integer >= 16"):
        cp.simulate_screen(**{**SMALL, "image_size": 8})
    with pytest.raises(ValueError, match="sites_per_well"):
        cp.simulate_screen(**{**SMALL, "sites_per_well": 0})


# --------------------------------------------------------------------------- files


def test_write_open_round_trip(small: cp.SimulatedScreen, tmp_path: Path) -> None:
    out = tmp_path / "screen"
    cp.write_screen(small, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["images.npy", "masks.npy", "obs.parquet", "cells.parquet", "groups.csv"]
    )
    opened = open_image_store(out)  # the one reader of image stores
    assert isinstance(opened.images, np.memmap) and isinstance(opened.masks, np.memmap)
    _assert_screens_equal(small, opened)


def test_screen_written_to_named_files(small: cp.SimulatedScreen, tmp_path: Path) -> None:
    files = ImageFiles(
        *(tmp_path / f"{n}" for n in ("i.npy", "o.parquet", "m.npy", "c.parquet", "g.csv"))
    )
    cp.write_screen(small, files)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["i.npy", "o.parquet", "m.npy", "c.parquet", "g.csv"]
    )
    _assert_screens_equal(small, open_image_store(files))
    with pytest.raises(FileNotFoundError, match="o.parquet"):
        open_image_store(ImageFiles(files.images, tmp_path / "o.parquet.missing"))


# --------------------------------------------------------------------------- planted biology


def _cell_means(screen: cp.SimulatedScreen, channel: str) -> np.ndarray:
    """Mean intensity of ``channel`` inside every cell of ``screen.cells``, in order, above the
    plate's background (its 1st percentile on control images)."""
    c = cp.CHANNELS.index(channel)
    obs = screen.obs
    background = {
        plate: np.percentile(screen.images[rows.index[rows["is_control"]], c], 1)
        for plate, rows in obs.groupby("plate")
    }
    means = []
    for index, mask in enumerate(screen.masks):
        n = int(obs.at[index, "n_cells"])
        sums = np.bincount(mask.ravel(), weights=screen.images[index, c].ravel(), minlength=n + 1)
        mean = sums[1:] / np.bincount(mask.ravel(), minlength=n + 1)[1:]
        means.append(mean - background[obs.at[index, "plate"]])
    return np.concatenate(means)


def _by_plate(screen: cp.SimulatedScreen, group: str, values: np.ndarray) -> pd.DataFrame:
    """Per plate: mean of ``values`` in perturbed cells of ``group`` and in unperturbed cells."""
    cells = screen.cells.assign(
        value=values,
        plate=screen.obs["plate"].to_numpy()[screen.cells["image_index"]],
        group=screen.obs["gene_group"].to_numpy()[screen.cells["image_index"]],
    )
    perturbed = cells[cells["perturbed"] & (cells["group"] == group)]
    normal = cells[~cells["perturbed"]]
    assert perturbed.groupby("plate").size().min() >= 5
    return pd.DataFrame(
        {
            "perturbed": perturbed.groupby("plate")["value"].mean(),
            "normal": normal.groupby("plate")["value"].mean(),
        }
    )


def test_enlarged_mitochondria_are_brighter(medium: cp.SimulatedScreen) -> None:
    table = _by_plate(medium, "mito_enlarged", _cell_means(medium, "mitochondria"))
    assert len(table) == 3
    assert (table["perturbed"] > 1.1 * table["normal"]).all(), table


def test_er_expansion_brightens_the_er(medium: cp.SimulatedScreen) -> None:
    table = _by_plate(medium, "er_expansion", _cell_means(medium, "er"))
    assert (table["perturbed"] > 1.1 * table["normal"]).all(), table


def test_large_cells_have_larger_masks(medium: cp.SimulatedScreen) -> None:
    table = _by_plate(medium, "large_cells", medium.cells["area"].to_numpy(float))
    assert (table["perturbed"] > 1.3 * table["normal"]).all(), table
    small = _by_plate(medium, "small_clumped", medium.cells["area"].to_numpy(float))
    assert (small["perturbed"] < 0.85 * small["normal"]).all(), small


def test_small_clumped_lowers_density(medium: cp.SimulatedScreen) -> None:
    obs = medium.obs
    per_group = obs.groupby("gene_group")["n_cells"].mean()
    assert per_group["small_clumped"] < 0.9 * per_group[cp.CONTROL_GENE]


def test_plate_batch_effects_exceed_perturbation_effects(medium: cp.SimulatedScreen) -> None:
    """Raw per-channel image intensity differs more between plates (controls vs controls, same
    cell type) than between a planted group and the controls of its own plate."""
    obs = medium.obs
    log_mean = np.log(medium.images.reshape(len(obs), 6, -1).astype(np.float64).mean(-1))
    controls = obs["is_control"].to_numpy()
    plate_means = pd.DataFrame(log_mean[controls]).groupby(obs["plate"][controls].values).mean()
    batch = np.mean(
        [
            np.abs(plate_means.loc[a] - plate_means.loc[b]).mean()
            for a, b in itertools.combinations(plate_means.index, 2)
        ]
    )
    effects = []
    for (plate, group), rows in obs.groupby(["plate", "gene_group"]).groups.items():
        if group not in (cp.CONTROL_GENE, cp.NO_EFFECT_GROUP):
            effects.append(np.abs(log_mean[rows].mean(0) - plate_means.loc[plate]).mean())
    assert len(effects) == 3 * 6
    assert batch > 1.2 * np.mean(effects), (batch, np.mean(effects))
