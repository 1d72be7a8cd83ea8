"""Tests of `benchmarks/results_table.py` on small fake model cards and ablation lines (no training)."""

import importlib.util
import json
import pathlib

import pytest
from absl.testing import flagsaver

from tarrl_tf import zoo

REPO = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _load_module():
    # Loaded once, by path (as the script runs): the module defines absl flags.
    path = REPO / "benchmarks" / "results_table.py"
    spec = importlib.util.spec_from_file_location("results_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results_table = _load_module()


def _metric(task, attack, epsilon, robust, *, clean, num_examples=500):
    norm = "l2" if attack in ("pgd_l2", "cw_l2") else "linf"
    return {"head": "linear", "clean_accuracy": clean, "robust_accuracy": robust,
            "num_examples": num_examples,
            "attack": {"name": attack, "norm": norm, "epsilon": epsilon, "steps": 40},
            "fine_tune": False, "dataset": "mnist", "dataset_sha256": "ab" * 32, "task": task}


def _card(name, method, seconds, metrics, regularizer=None):
    """A card shaped like zoo/*/model_card.json."""
    return {
        "schema_version": 1, "name": name, "dataset": "mnist", "architecture": "small_cnn",
        "method": method, "regularizer": regularizer or {},
        "threat_model": {"norm": "linf", "epsilon": 0.3},
        "training": {"epochs": 10, "batch_size": 256, "wall_clock_seconds": seconds,
                     "train_examples": 10000, "learning_rate": 0.002, "hardware": "2 CPU cores",
                     "command": f"python benchmarks/reproduce.py --row={name}"},
        "metrics": metrics,
        "files": {"encoder.keras": {"sha256": "0" * 64, "bytes": 1}},
        "software": {"tensorflow": "2.21.0", "keras": "3.15.1", "tarrl_tf": "0.1.0"},
        "headline": {"task": "labels", "suite": "standard", "norm": "linf", "epsilon": 0.3,
                     "clean_accuracy": 0.97, "robust_accuracy": 0.0, "num_examples": 500,
                     "attacks": ["apgd_ce", "apgd_t", "square"]},
    }


@pytest.fixture
def cards():
    simclr = _card("mnist_cnn_simclr", "simclr", 200.0, [
        _metric("labels", "pgd_linf", 0.1, 0.30, clean=0.98),
        _metric("labels", "pgd_linf", 0.2, 0.00, clean=0.98),
        _metric("parity", "pgd_linf", 0.1, 0.20, clean=0.95),
        _metric("parity", "pgd_linf", 0.2, 0.00, clean=0.95),
    ])
    tarrl = _card("mnist_cnn_tarrl_linf03", "tarrl", 500.0, [
        # A 100-image subset measures its own clean accuracy; listed first on purpose.
        _metric("labels", "cw_l2", 2.0, 0.25, clean=0.99, num_examples=100),
        _metric("labels", "spsa", 0.1, 0.55, clean=0.99, num_examples=100),
        _metric("labels", "pgd_linf", 0.1, 0.50, clean=0.97),
        _metric("labels", "pgd_linf", 0.2, 0.10, clean=0.97),
        _metric("labels", "pgd_l2", 1.0, 0.60, clean=0.97),
        _metric("labels", "pgd_l2", 2.0, 0.20, clean=0.97),
        _metric("parity", "pgd_linf", 0.1, 0.40, clean=0.96),
        _metric("parity", "pgd_linf", 0.2, 0.05, clean=0.96),
    ], regularizer={"estimator": "pgd", "steps": 3, "divergence": "relative_l2", "weight": 1.0})
    for card in (simclr, tarrl):
        zoo.validate_model_card(card)
    return [tarrl, simclr]


def _old_line(name, weight, divergence, estimator, clean, robust, r, seconds):
    """A line as ablation.py wrote it before it recorded seeds, norms and budgets."""
    return {"name": name, "weight": weight, "estimator": estimator, "steps": 3,
            "divergence": divergence, "seconds": seconds, "clean_accuracy": clean,
            "robust_accuracy": dict(zip(("0.1", "0.2", "0.3"), robust)),
            "R_squared_l2": dict(zip(("0.1", "0.2", "0.3"), r)),
            "final_ssl_loss": 5.0, "final_training_robustness": 0.1}


def _new_line(name, weight, seed, clean, robust, *, divergence="relative_l2", norm="inf",
              epsilon=0.3, train_examples=8000, eval_attack="pgd_linf", epsilons=("0.1", "0.2", "0.3")):
    return {"name": name, "weight": weight, "estimator": "pgd", "steps": 3, "divergence": divergence,
            "seconds": 300, "clean_accuracy": clean,
            "robust_accuracy": dict(zip(epsilons, robust)),
            "R_squared_l2": {e: 0.5 for e in epsilons},
            "final_ssl_loss": 5.0, "final_training_robustness": 0.1,
            "seed": seed, "norm": norm, "epsilon": epsilon, "warmup_epochs": 2,
            "train_examples": train_examples, "epochs": 8, "batch_size": 256, "learning_rate": 0.002,
            "width": 32, "dataset": "mnist", "eval_attack": eval_attack, "eval_steps": 20,
            "eval_examples": 500, "probe_train_examples": 10000}


@pytest.fixture
def lines():
    return [
        # RESULTS.md's ablation, in the old format (seed 0, L-inf).
        _old_line("simclr", 0.0, "squared_l2", "pgd", 0.968, (0.330, 0.0, 0.0), (0.2, 1.0, 2.0681), 148),
        _old_line("tarrl_squared_l2_w5", 5.0, "squared_l2", "pgd", 0.918, (0.554, 0.044, 0.0),
                  (0.001, 0.005, 0.0138), 320),
        _old_line("tarrl_relative_l2_w1", 1.0, "relative_l2", "pgd", 0.972, (0.752, 0.268, 0.006),
                  (0.05, 0.2, 0.3398), 339),
        _old_line("tarrl_relative_l2_w5", 5.0, "relative_l2", "pgd", 0.950, (0.406, 0.102, 0.016),
                  (0.1, 0.5, 1.0916), 403),
        _old_line("tarrl_relative_l2_w1_fgsm", 1.0, "relative_l2", "fgsm", 0.968, (0.674, 0.116, 0.004),
                  (0.1, 0.3, 0.5433), 250),
        # New lines: two more seeds of the weight-1 run, a seed-1 weight sweep, other budgets and norms.
        _new_line("tarrl_relative_l2_w1_s1", 1.0, 1, 0.960, (0.700, 0.200, 0.000)),
        _new_line("tarrl_relative_l2_w1_s2", 1.0, 2, 0.966, (0.650, 0.230, 0.003)),
        _new_line("tarrl_relative_l2_w2_s1", 2.0, 1, 0.955, (0.600, 0.150, 0.010)),
        # Weight 0 is plain SimCLR whatever --divergence said.
        _new_line("simclr_s1", 0.0, 1, 0.970, (0.300, 0.000, 0.000)),
        _new_line("tarrl_relative_l2_w1_4k", 1.0, 1, 0.950, (0.600, 0.100, 0.000), train_examples=4000),
        _new_line("tarrl_relative_l2_w1_l2", 1.0, 0, 0.970, (0.800, 0.400), norm="2", epsilon=2.0,
                  eval_attack="pgd_l2", epsilons=("1.0", "2.0")),
    ]


def _cells(table):
    """A markdown table's cells, header first, without the separator line."""
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in table.splitlines() if line.startswith("|") and "---" not in line]


def _rows(markdown, heading):
    """The cells of the first table after the line starting with `heading`."""
    return _cells(markdown.split("\n" + heading, 1)[1].split("\n\n")[1])


def _by_first_cell(rows):
    header = rows[0]
    return {row[0]: dict(zip(header, row)) for row in rows[1:]}


def test_task_tables_read_the_cards(cards):
    markdown = results_table.tables(cards)
    labels = _by_first_cell(_rows(markdown, "### mnist, task `labels` (linear probe, 500 test images)"))
    assert list(labels) == ["`mnist_cnn_simclr`", "`mnist_cnn_tarrl_linf03`"]  # SimCLR first.
    tarrl = labels["`mnist_cnn_tarrl_linf03`"]
    assert tarrl["pgd_linf 0.1"] == "0.500"
    assert tarrl["pgd_l2 2"] == "0.200"
    assert tarrl["pretraining s (x simclr)"] == "500 (2.5x)"
    assert labels["`mnist_cnn_simclr`"]["pgd_l2 1"] == "-"
    parity = _by_first_cell(_rows(markdown, "### mnist, task `parity`"))
    assert parity["`mnist_cnn_tarrl_linf03`"]["clean"] == "0.960"
    assert parity["`mnist_cnn_tarrl_linf03`"]["pgd_linf 0.2"] == "0.050"


def test_a_rows_cost_counts_the_encoder_it_starts_from_or_distils_from(cards):
    tarrl, simclr = cards
    # The card names its first stage; an older card's row names its teacher.
    second = _card("mnist_cnn_tarrl_two_stage", "tarrl", 300.0, tarrl["metrics"])
    second["training"]["init_encoder"] = "mnist_cnn_simclr"
    student = _card("mnist_cnn_deacl_linf03", "deacl", 100.0, tarrl["metrics"])
    rows = [{"name": "mnist_cnn_deacl_linf03", "teacher": "mnist_cnn_simclr"},
            {"name": "mnist_cnn_tarrl_two_stage", "init_encoder": "not_what_the_card_says"}]
    assert results_table.sources([second, student, tarrl], rows) == {
        "mnist_cnn_tarrl_two_stage": ["mnist_cnn_simclr"], "mnist_cnn_deacl_linf03": ["mnist_cnn_simclr"],
        "mnist_cnn_tarrl_linf03": []}
    labels = _by_first_cell(_rows(results_table.tables([simclr, tarrl, second, student], rows),
                                  "### mnist, task `labels`"))
    cost = "pretraining s (x simclr)"
    assert labels["`mnist_cnn_tarrl_two_stage`"][cost] == "500 (2.5x; 300 + `mnist_cnn_simclr` 200)"
    assert labels["`mnist_cnn_deacl_linf03`"][cost] == "300 (1.5x; 100 + `mnist_cnn_simclr` 200)"
    assert labels["`mnist_cnn_tarrl_linf03`"][cost] == "500 (2.5x)"
    assert labels["`mnist_cnn_simclr`"][cost] == "200 (1.0x)"


def test_subset_columns_show_their_count_and_clean_comes_from_the_full_rows(cards):
    rows = _rows(results_table.tables(cards), "### mnist, task `labels`")
    assert "cw_l2 2 (n=100)" in rows[0] and "spsa 0.1 (n=100)" in rows[0]
    assert "pgd_linf 0.1" in rows[0]  # Full-size columns carry no count.
    tarrl = _by_first_cell(rows)["`mnist_cnn_tarrl_linf03`"]
    assert tarrl["cw_l2 2 (n=100)"] == "0.250"
    assert tarrl["clean"] == "0.970"  # Not the subset's 0.990.


def test_transfer_reads_the_gaps(cards):
    rows = _cells(results_table.transfer(cards))
    row = next(r for r in rows if r[:4] == ["`mnist_cnn_tarrl_linf03`", "parity", "pgd_linf", "0.1"])
    # Labels gap 0.5 - 0.3, parity gap 0.4 - 0.2; cw_l2 exists on labels only and is left out.
    assert row[4:] == ["+0.200", "+0.200", "1.00"]
    assert not any(r[2] == "cw_l2" for r in rows)


def test_transfer_leaves_out_an_attack_the_simclr_card_was_not_measured_with(cards):
    tarrl = cards[0]
    tarrl["metrics"] += [_metric("labels", "apgd_ce", 0.1, 0.45, clean=0.97),
                         _metric("parity", "apgd_ce", 0.1, 0.35, clean=0.96)]
    rows = _cells(results_table.transfer(cards))[1:]
    assert rows and not any(r[2] == "apgd_ce" for r in rows)
    assert not any("nan" in cell for r in rows for cell in r)


def test_transfer_has_a_block_per_tarrl_entry_and_no_ratio_without_a_labels_gap(cards):
    l2 = _card("mnist_cnn_tarrl_l2eps2", "tarrl", 500.0, [
        _metric("labels", "pgd_linf", 0.1, 0.30, clean=0.97),  # No gap over SimCLR's 0.30.
        _metric("parity", "pgd_linf", 0.1, 0.35, clean=0.96),
    ])
    rows = _cells(results_table.transfer(cards + [l2]))[1:]
    assert {r[0] for r in rows} == {"`mnist_cnn_tarrl_linf03`", "`mnist_cnn_tarrl_l2eps2`"}
    row = next(r for r in rows if r[0] == "`mnist_cnn_tarrl_l2eps2`")
    assert row[4:] == ["+0.000", "+0.150", "-"]


def test_old_lines_are_seed_0_and_l_inf(lines):
    old = results_table.settings(lines[2])
    assert (old["seed"], old["norm"], old["epsilon"], old["train_examples"]) == (0, "inf", 0.3, 8000)
    assert results_table.settings(lines[0])["norm"] is None  # SimCLR has no regularizer.


def test_ablation_table_shows_the_steps_and_what_r_is_estimated_on(lines):
    images = {**_new_line("tarrl_w1_images", 1.0, 0, 0.960, (0.700, 0.100, 0.000)),
              "regularize_on": "images"}
    half = {**images, "name": "tarrl_w1_half_pgd7", "regularized_fraction": 0.5, "steps": 7}
    plain = _by_first_cell(_rows("\n".join(results_table.ablation_sections(lines)),
                                 "#### pgd_linf-20 on 500 test images"))
    assert "R on" not in plain["simclr"]  # Every line estimated R on the whole batch of views.
    assert plain["tarrl_relative_l2_w1_fgsm"]["estimator"] == "fgsm"
    table = _by_first_cell(_rows("\n".join(results_table.ablation_sections(lines + [images, half])),
                                 "#### pgd_linf-20 on 500 test images"))
    assert table["tarrl_relative_l2_w1"]["estimator"] == "pgd-3"
    assert table["tarrl_w1_half_pgd7"]["estimator"] == "pgd-7"
    assert table["tarrl_relative_l2_w1"]["R on"] == "views"  # Lines older than the setting.
    assert table["tarrl_w1_images"]["R on"] == "images"
    assert table["tarrl_w1_half_pgd7"]["R on"] == "images, 0.5 of each batch"
    assert table["simclr"]["R on"] == "-"


def test_ablation_table_shows_old_and_new_lines_with_seeds(lines):
    markdown = "\n".join(results_table.ablation_sections(lines))
    linf = _by_first_cell(_rows(markdown, "#### pgd_linf-20 on 500 test images"))
    assert len(linf) == 10
    assert "threat" not in linf["simclr"]  # Every regularized L-inf line trained at L-inf 0.3.
    assert linf["tarrl_relative_l2_w1"]["seed"] == "0"
    assert linf["tarrl_relative_l2_w1"]["pgd_linf-20 0.2"] == "0.268"
    assert linf["tarrl_relative_l2_w1"]["R at 0.3"] == "0.3398"
    assert linf["tarrl_relative_l2_w1_s2"]["seed"] == "2"
    assert linf["tarrl_relative_l2_w1_s2"]["clean"] == "0.966"
    assert linf["simclr_s1"]["divergence"] == "-"
    assert linf["tarrl_relative_l2_w1_4k"]["budget"] == "4000 x 8"
    assert linf["simclr"]["budget"] == "8000 x 8"
    l2 = _by_first_cell(_rows(markdown, "#### pgd_l2-20 on 500 test images"))
    assert l2["tarrl_relative_l2_w1_l2"]["threat"] == "L2 2"
    assert l2["tarrl_relative_l2_w1_l2"]["pgd_l2-20 2"] == "0.400"


def test_seed_groups_give_mean_and_sample_std(lines):
    groups = results_table.seed_groups(lines)
    names = [[line["name"] for line in group] for group in groups]
    assert names == [["simclr", "simclr_s1"],
                     ["tarrl_relative_l2_w1", "tarrl_relative_l2_w1_s1", "tarrl_relative_l2_w1_s2"]]
    rows = _rows("\n".join(results_table.ablation_sections(lines)), "### Spread over seeds")
    tarrl = dict(zip(rows[0], rows[2]))
    assert (tarrl["seeds"], tarrl["n"]) == ("0, 1, 2", "3")
    assert tarrl["clean"] == "0.966 ± 0.006"  # Population std would give 0.005.
    assert tarrl["pgd_linf-20 0.1"] == "0.701 ± 0.051"
    assert tarrl["pgd_linf-20 0.3"] == "0.003 ± 0.003"
    assert dict(zip(rows[0], rows[1]))["clean"] == "0.969 ± 0.001"


def test_weight_sweeps_include_simclr_of_the_same_budget_and_seed(lines):
    sweeps = [[line["name"] for line in sweep] for sweep in results_table.weight_sweeps(lines)]
    assert sweeps == [["simclr", "tarrl_relative_l2_w1", "tarrl_relative_l2_w5"],
                      ["simclr_s1", "tarrl_relative_l2_w1_s1", "tarrl_relative_l2_w2_s1"]]
    markdown = "\n".join(results_table.ablation_sections(lines))
    rows = _rows(markdown, "### Weight sweep: relative_l2, pgd-3 at Linf 0.3, warm-up 2 epochs, on views; "
                           "mnist, 8000 images x 8 epochs, seed 1")
    assert [row[:3] for row in rows[1:]] == [["0", "simclr_s1", "0.970"],
                                            ["1", "tarrl_relative_l2_w1_s1", "0.960"],
                                            ["2", "tarrl_relative_l2_w2_s1", "0.955"]]


def test_figures_are_written_as_png(cards, lines, tmp_path):
    _, figures = results_table.report(cards, lines)
    assert set(figures) == {"mnist_epsilon_sweep.png", "weight_tradeoff.png"}
    # Two tasks; a second row of panels for the cards' pgd_l2 rows.
    assert len(figures["mnist_epsilon_sweep.png"].axes) == 4
    tradeoff = figures["weight_tradeoff.png"].axes
    assert [[t.get_text() for t in axes.get_xticklabels()] for axes in tradeoff] == [["0", "1", "5"],
                                                                                    ["0", "1", "2"]]
    paths = results_table.write_figures(figures, tmp_path / "figures")
    assert sorted(pathlib.Path(p).name for p in paths) == sorted(figures)
    for path in paths:
        content = pathlib.Path(path).read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 1000


def test_without_ablation_lines_only_the_cards_are_reported(cards):
    markdown, figures = results_table.report(cards, [])
    assert "Ablation" not in markdown
    assert set(figures) == {"mnist_epsilon_sweep.png"}


def _write_zoo(directory, cards):
    entries = {}
    for card in cards:
        path = directory / card["name"] / zoo.MODEL_CARD_FILENAME
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(card))
        files = {**card["files"], zoo.MODEL_CARD_FILENAME: {"sha256": zoo.sha256_file(path),
                                                            "bytes": path.stat().st_size}}
        entries[card["name"]] = {"model_card": zoo.MODEL_CARD_FILENAME, "files": files}
    manifest = {**zoo.empty_manifest(), "entries": entries}
    (directory / zoo.MANIFEST_FILENAME).write_text(json.dumps(manifest))


def test_main_prints_the_tables_and_writes_markdown_and_figures(cards, lines, tmp_path, capsys):
    _write_zoo(tmp_path, cards)
    ablation = tmp_path / "ablation.jsonl"
    ablation.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with flagsaver.flagsaver():
        results_table.FLAGS(["results_table", f"--zoo_dir={tmp_path}", f"--ablation={ablation}",
                             f"--figures_dir={tmp_path / 'figures'}",
                             f"--markdown_out={tmp_path / 'tables.md'}"])
        results_table.main([])
    printed = capsys.readouterr().out
    markdown = (tmp_path / "tables.md").read_text()
    assert markdown in printed and "### Spread over seeds" in markdown
    for name in ("mnist_epsilon_sweep.png", "weight_tradeoff.png"):
        assert f"Figure written to {tmp_path / 'figures' / name}" in printed
        assert (tmp_path / "figures" / name).read_bytes().startswith(PNG_SIGNATURE)


def test_update_replaces_only_the_text_between_the_markers():
    document = "# Results\nprose\n<!-- tables:start -->\nold | table\n<!-- tables:end -->\nmore prose\n"
    updated = results_table.spliced(document, "\n| new | table |\n")
    assert updated == ("# Results\nprose\n<!-- tables:start -->\n| new | table |\n"
                       "<!-- tables:end -->\nmore prose\n")
    assert results_table.spliced(updated, "| new | table |") == updated
    with pytest.raises(ValueError, match="tables:end"):
        results_table.spliced("<!-- tables:start -->\nno end\n", "x")


def test_the_labels_table_shows_each_cards_headline_where_it_has_one(cards):
    tarrl = next(card for card in cards if card["name"] == "mnist_cnn_tarrl_linf03")
    tarrl["headline"] = {"task": "labels", "suite": "standard", "norm": "linf", "epsilon": 0.3,
                            "clean_accuracy": 0.97, "robust_accuracy": 0.412, "num_examples": 500,
                            "attacks": ["apgd_ce", "apgd_t", "square"]}
    # A card of before the headline (the validator refuses it now) shows none.
    next(card for card in cards if card["name"] == "mnist_cnn_simclr").pop("headline")
    markdown = results_table.tables(cards)
    labels = _by_first_cell(_rows(markdown, "### mnist, task `labels`"))
    assert labels["`mnist_cnn_tarrl_linf03`"]["worst case"] == "0.412 (standard, linf 0.3, n=500)"
    assert labels["`mnist_cnn_simclr`"]["worst case"] == "-"
    # Derived tasks have no headline column: the card's headline is on the labels task.
    assert "worst case" not in _rows(markdown, "### mnist, task `parity`")[0]


def test_no_headline_column_without_headlines(cards):
    for card in cards:
        card.pop("headline")
    assert "worst case" not in _rows(results_table.tables(cards), "### mnist, task `labels`")[0]
