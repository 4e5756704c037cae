"""The quickstart report: a row for every fidelity category, whatever the scenes or models score."""

import json

from mllm.bench.fidelity import CATEGORIES
from mllm.bench.report import write_quickstart_report


def test_report_has_a_row_for_every_category_even_where_nothing_was_scored(tmp_path):
    run = tmp_path / "sft"
    run.mkdir()
    (run / "train_log.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 2.0}]}))

    def result(value):  # an untrained model names nothing: every category n/a
        return {"n": 8, "categories": {name: value for name in CATEGORIES},
                "metrics": {"bleu4": 0.0, "rouge_l": 0.0, "cider": 0.0}, "length": {"mean_words": 3.0},
                "openers": {"most_common_share": 1.0}, "reference_openers": {"most_common_share": 0.2}}

    scores = {"trained": {"detailed": result(None), "short": result(None)},
              "untrained": {"detailed": result(None), "short": result(None)}}
    report = write_quickstart_report(tmp_path, scores, {"colour": 1.0}, {"sft": run}, seconds=60, preset="rich")
    rows = {line.split("|")[1].strip() for line in report.read_text().splitlines() if line.startswith("| ")}
    assert set(CATEGORIES) <= rows
    assert "preset `rich`" in report.read_text()
    assert json.loads((tmp_path / "report.json").read_text())["preset"] == "rich"


def test_a_report_with_clips_has_their_section_and_plots(tmp_path):
    run = tmp_path / "sft"
    run.mkdir()
    (run / "train_log.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 2.0}]}))

    def result(temporal):
        return {"n": 4, "categories": {name: temporal if name == "temporal" else (None if temporal is None else 1.0)
                                       for name in CATEGORIES},
                "metrics": {"bleu4": 0.0, "rouge_l": 0.0, "cider": 0.0}, "length": {"mean_words": 3.0},
                "openers": {"most_common_share": 1.0}, "reference_openers": {"most_common_share": 0.2}}

    images = {m: {"detailed": result(None), "short": result(None)} for m in ("trained", "untrained")}
    clips = {"trained": {"detailed": result(0.875), "short": result(None)},
             "untrained": {"detailed": result(0.0), "short": result(None)}}
    report = write_quickstart_report(tmp_path, images, {}, {"sft": run}, seconds=60, preset="clips", clip_scores=clips)
    text = report.read_text()
    section = text[text.index("## Held-out clips"):]
    temporal = next(line for line in section.splitlines() if line.startswith("| temporal |"))
    assert temporal.split("|")[2:4] == [" 0.875 ", " 0.000 "]
    assert (tmp_path / "categories_clips_detailed.png").is_file()
    assert json.loads((tmp_path / "report.json").read_text())["clip_scores"]["trained"]["detailed"]["n"] == 4
