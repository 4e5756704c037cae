"""Reference metrics against published values, caption statistics, and the eval report files."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mllm.cli import main
from mllm.bench.scenes import generate_scenes, scene_preset
from mllm.bench.metrics import caption_metrics, length_stats, ngram_scores, opener_stats
from mllm.bench.fidelity import CATEGORIES
from mllm.bench.evaluation import evaluate_files

# NLTK's BLEU documentation example (nltk.translate.bleu_score.corpus_bleu): 0.5920778868801042
HYP1 = "It is a guide to action which ensures that the military always obeys the commands of the party"
REF1A = "It is a guide to action that ensures that the military will forever heed Party commands"
REF1B = "It is the guiding principle which guarantees the military forces always being under the command of the Party"
REF1C = "It is the practical guide for the army always to heed the directions of the party"
HYP2 = "he read the book because he was interested in world history"
REF2 = "he was interested in world history because he read the book"


def test_bleu4_matches_nltk_documentation():
    corpus = ngram_scores({"1": HYP1, "2": HYP2}, {"1": [REF1A, REF1B, REF1C], "2": [REF2]})
    assert corpus["bleu4"] == pytest.approx(0.5920778868801042, abs=1e-6)
    sentence = ngram_scores({"1": HYP1}, {"1": [REF1A, REF1B, REF1C]})
    assert sentence["bleu4"] == pytest.approx(0.5045666840058485, abs=1e-6)


def test_rouge_l_matches_lin_2004_example():
    # Lin (2004), ROUGE paper, section 3.1: reference "police killed the gunman";
    # S2 "police kill the gunman" has LCS 3/4, S3 "the gunman kill police" LCS 2/4.
    ref = ["police killed the gunman"]
    assert ngram_scores({"s2": "police kill the gunman"}, {"s2": ref})["rouge_l"] == pytest.approx(0.75)
    assert ngram_scores({"s3": "the gunman kill police"}, {"s3": ref})["rouge_l"] == pytest.approx(0.5)


def test_cider_d_matches_summeval_reference_value():
    # SummEval's test of the COCO CIDEr-D scorer (evaluation/tests/test_cider.py): 2.5759014911864084
    cands = ["28-year-old chef found dead in San Francisco mall",
             "A 28-year-old chef who recently moved to San Francisco was found dead in the staircase of a local "
             "shopping center.",
             "The victim's brother said he cannot imagine anyone who would want to harm him,\"Finally, it went "
             "uphill again at him.\""]
    refs = ["28-Year-Old Chef Found Dead at San Francisco Mall",
            "A 28-year-old chef who had recently moved to San Francisco was found dead in the stairwell of a "
            "local mall this week.",
            "But the victim's brother says he can't think of anyone who would want to hurt him, saying, "
            "\"Things were finally going well for him.\""]
    result = ngram_scores({str(i): c for i, c in enumerate(cands)}, {str(i): [r] for i, r in enumerate(refs)})
    assert result["cider"] == pytest.approx(2.5759014911864084, abs=1e-9)


def test_caption_metrics_tokenize_case_and_punctuation():
    same = caption_metrics({"a": "A red circle, on the LEFT!", "b": "Two blue squares."},
                           {"a": "a red circle on the left", "b": ["two blue squares"]})
    assert same["bleu4"] == pytest.approx(1.0) and same["rouge_l"] == pytest.approx(1.0)
    worse = caption_metrics({"a": "A green star.", "b": None},
                            {"a": "a red circle on the left", "b": "two blue squares"})
    assert worse["bleu4"] < 0.01 and worse["rouge_l"] < 0.2


def test_length_and_opener_statistics():
    caps = ["A red circle on the left.", "A red circle.", "The blue square sits in the middle of it", None]
    lengths = length_stats(caps)
    assert lengths["mean_words"] == pytest.approx((6 + 3 + 9 + 0) / 4)
    assert lengths["median_words"] == pytest.approx(4.5)
    assert lengths["empty_share"] == pytest.approx(0.25)
    openers = opener_stats(caps)
    assert openers == {"most_common": "a red", "most_common_share": pytest.approx(2 / 3), "distinct": 2}
    assert opener_stats(["A red circle.", "A red square.", "A blue one."], n_words=3)["distinct"] == 3


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    generate_scenes(out, scene_preset("rich", n_train=2, n_val=2, n_test=12, seed=5))
    return out


def test_evaluate_files_parquet_shards_and_jsonl_with_null_rows(scenes, tmp_path):
    records = [json.loads(line) for line in (scenes / "test.jsonl").read_text().splitlines()]
    rows = [{"key": r["key"], "detailed_caption": r["caption"] if i else None} for i, r in enumerate(records)]
    (tmp_path / "recaption" / "shards").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "recaption" / "shards" / "part-000000.parquet")
    result = evaluate_files(tmp_path / "recaption", scenes / "test_truth.jsonl", field="detailed_caption",
                            out_dir=tmp_path / "eval")
    assert result["n"] == len(records)
    assert set(result["categories"]) == set(CATEGORIES)
    assert 0.8 < result["categories"]["object_recall"] < 1.0  # one caption of twelve is empty
    assert result["categories"]["colour_binding"] == 1.0
    assert result["length"]["empty_share"] == pytest.approx(1 / len(records))
    for name in ("eval.json", "eval.md", "categories.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["n"] == len(records)

    (tmp_path / "captions.jsonl").write_text("".join(json.dumps({"key": r["key"], "caption": r["caption"]}) + "\n"
                                                     for r in records))
    perfect = evaluate_files(tmp_path / "captions.jsonl", scenes / "test_truth.jsonl")
    assert perfect["categories"].pop("temporal") is None  # image scenes have no events
    assert all(v == 1.0 for v in perfect["categories"].values())
    assert perfect["metrics"]["bleu4"] == pytest.approx(1.0) and perfect["metrics"]["cider"] > 5


def test_missing_caption_column_names_the_file(scenes, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"key": "test-000000", "text": "a red circle"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl"):
        evaluate_files(bad, scenes / "test_truth.jsonl")


def test_eval_command_prints_the_table(scenes, tmp_path, capsys):
    assert main(["eval", "--captions", str(scenes / "test.jsonl"), "--truth", str(scenes / "test_truth.jsonl"),
                 "--field", "short_caption", "--task", "short", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| object_recall | 1.000 |" in printed and "| object_precision | 1.000 |" in printed
    assert "| relation | n/a |" in printed and "| position | n/a |" in printed
    assert (tmp_path / "eval.md").read_text() in printed
