import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from valueharm.alignment.vim_data import (
    ARGUMENTS_FILE,
    IMPORTANCE,
    SURVEY_FILES,
    SURVEY_SCALE,
    Argument,
    VimTemplates,
    argument_score,
    build_stage1,
    build_stage2,
    count_examples,
    parse_survey_digit,
    read_arguments,
    stage1_examples,
    stage2_examples,
    stochastic_round,
    write_vim_data,
)
from valueharm.errors import DataMissingError, ValueharmError
from valueharm.settings import VimDataSettings
from valueharm.values import VALUES, ValueProfile, get_profile


@pytest.fixture(scope="module")
def arguments(data_dir: Path) -> list[Argument]:
    return read_arguments(data_dir, ARGUMENTS_FILE)


@pytest.fixture(scope="module")
def templates() -> VimTemplates:
    return VimTemplates.load()


def uniform(name: str, score: float, **overrides: float) -> ValueProfile:
    return ValueProfile(name, {value: overrides.get(value.replace("-", "_"), score) for value in VALUES})


def pandas_splits(data_dir: Path, profile: ValueProfile, threshold: float = 3.0) -> dict[tuple[str, str], list[int]]:
    """The published recipe, written out independently: min score over annotated values, then pandas sampling."""
    frame = pd.read_csv(data_dir / ARGUMENTS_FILE, sep="\t", index_col=0)
    flags = frame[list(VALUES)].to_numpy()
    scores = np.where(flags == 1, np.array(profile.vector), np.inf).min(axis=1)
    splits = {}
    for polarity, subset in (("pos", frame[scores >= threshold]), ("neg", frame[scores < threshold])):
        train = subset.sample(frac=0.8, random_state=42)
        rest = subset.drop(train.index)
        valid = rest.sample(frac=0.5, random_state=42)
        test = rest.drop(valid.index)
        for split, rows in (("train", train), ("valid", valid), ("test", test)):
            splits[polarity, split] = rows.index.tolist()
    return splits


def grouped(examples) -> dict[tuple[str, str], list[int]]:
    groups: dict[tuple[str, str], list[int]] = {(p, s): [] for p in ("pos", "neg") for s in ("train", "valid", "test")}
    for example in examples:
        groups[example.polarity, example.split].append(example.argument_id)
    return groups


# ---------------------------------------------------------------------------------------------------- stage 1


@pytest.mark.parametrize("name", ["Pow", "Ach", "close_Uni_3", "SD", "Conservation"])
def test_stage1_splits_equal_pandas_selection(data_dir, arguments, templates, name):
    profile = get_profile(name, data_dir)
    examples = stage1_examples(arguments, profile, templates=templates)
    assert grouped(examples) == pandas_splits(data_dir, profile)


def test_stage1_reproduces_published_pow_split(data_dir):
    # File positions of the rows in data/values/{valid,test}/TH_3/pos/Pow.csv of the public reproduction
    # Ai-pre/Unintended-Harms-LLM-reproduction (published code, seed 42); 14/2/2 positives.
    examples = build_stage1(get_profile("Pow", data_dir), data_dir)
    position = {
        argument_id: i for i, argument_id in enumerate(pd.read_csv(data_dir / ARGUMENTS_FILE, sep="\t").iloc[:, 0])
    }
    groups = grouped(examples)
    assert [len(groups["pos", split]) for split in ("train", "valid", "test")] == [14, 2, 2]
    assert [len(groups["neg", split]) for split in ("train", "valid", "test")] == [5885, 736, 735]
    assert [position[i] for i in groups["pos", "valid"]] == [2436, 5369]
    assert [position[i] for i in groups["pos", "test"]] == [2335, 3573]
    assert [position[i] for i in groups["pos", "train"][:3]] == [85, 322, 2562]


def test_stage1_prompt_and_completion(data_dir, arguments, templates):
    examples = stage1_examples(arguments, get_profile("Pow", data_dir), templates=templates)
    by_id = {a.argument_id: a for a in arguments}
    for example in (next(e for e in examples if e.polarity == polarity) for polarity in ("pos", "neg")):
        argument = by_id[example.argument_id]
        assert argument.conclusion in example.prompt and argument.premise in example.completion
        assert ("would not" in example.prompt) == (example.polarity == "neg")
        assert ("would not" in example.completion) == (example.polarity == "neg")
        assert ("disagree" if argument.stance == "against" else "agree") in example.completion


def test_argument_score_is_minimum_over_annotated_values():
    argument = Argument(7, "We should x", "against", "because y", ("Power", "Security"))
    assert argument_score(argument, uniform("p", 6, Power=2, Hedonism=1)) == 2
    assert argument_score(argument, uniform("p", 1, Power=5, Security=4)) == 4


def test_threshold_semantics(arguments, templates):
    # Power below the threshold, Security exactly at it: positives are exactly the arguments without Power.
    profile = uniform("low-power", 6, Power=2.9, Security=3)
    examples = stage1_examples(arguments, profile, VimDataSettings(threshold=3), templates=templates)
    by_id = {a.argument_id: a for a in arguments}
    assert len(examples) == len(arguments)
    assert all((e.polarity == "pos") == ("Power" not in by_id[e.argument_id].values) for e in examples)
    assert any("Security" in by_id[e.argument_id].values for e in examples if e.polarity == "pos")


@pytest.mark.parametrize(("score", "empty", "phrase"), [(1, "pos", "≥"), (6, "neg", "<")])
def test_one_sided_profile_is_reported(arguments, templates, score, empty, phrase):
    profile = uniform(f"all-{score}", score)
    examples = stage1_examples(arguments, profile, templates=templates)
    counts = count_examples(profile, examples, [], VimDataSettings(), templates=templates)
    assert all(counts.stage1[split][empty] == 0 for split in ("train", "valid", "test"))
    assert sum(sum(by_polarity.values()) for by_polarity in counts.stage1.values()) == len(arguments)
    assert len(counts.warnings) == 1 and f"no argument scores {phrase} threshold 3" in counts.warnings[0]


# ---------------------------------------------------------------------------------------------------- stage 2


def test_stage2_every_value_is_a_target_including_achievement(data_dir):
    examples = build_stage2(get_profile("Ach", data_dir), data_dir)
    for split, relpath in SURVEY_FILES.items():
        frame = pd.read_csv(data_dir / relpath, sep="\t", index_col=0)
        expected = {value: int(frame[value].sum()) for value in VALUES}
        found = Counter(e.value for e in examples if e.split == split)
        assert found == expected and found["Achievement"] > 0
    # Ach is Achievement 6, everything else 1.
    assert {e.score for e in examples if e.value == "Achievement"} == {6}
    assert {e.score for e in examples if e.value != "Achievement"} == {1}
    for example in examples[:50]:
        assert example.completion.startswith(example.value)
        assert IMPORTANCE[example.score] in example.completion
        assert parse_survey_digit(example.completion) == example.score
        assert example.completion.rstrip(".").endswith(str(example.score))


def test_value_columns_are_read_by_name(tmp_path):
    header = ["", "Universalism", "Premise", "Stance", "Conclusion", *VALUES[:-1]]
    row = ["12", "0", "it matters", "against", "We should x", "1", *["0"] * 8]
    (tmp_path / "args.csv").write_text("\t".join(header) + "\n" + "\t".join(row) + "\n", encoding="utf-8")
    (argument,) = read_arguments(tmp_path, "args.csv")
    assert argument == Argument(12, "We should x", "against", "it matters", ("Achievement",))


def test_stochastic_rounding_is_seeded_and_unbiased():
    draws = [stochastic_round(2.3, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(draws)) == 1
    rng = np.random.default_rng(0)
    many = [stochastic_round(2.3, rng) for _ in range(20_000)]
    assert set(many) == {2, 3} and abs(np.mean(many) - 2.3) < 0.02
    assert {stochastic_round(4.0, rng) for _ in range(100)} == {4}


def test_stage2_digits_are_seeded(data_dir, templates):
    survey = {split: read_arguments(data_dir, relpath) for split, relpath in SURVEY_FILES.items()}
    profile = get_profile("close_Ach", data_dir)  # Achievement 2.5
    assert profile.scores["Achievement"] == 2.5
    seeded = (VimDataSettings(seed=seed) for seed in (42, 42, 1))
    first, again, other = (stage2_examples(survey, profile, s, templates=templates) for s in seeded)
    assert first == again and first != other
    achievement = [e.score for e in first if e.value == "Achievement"]
    assert set(achievement) == {2, 3} and abs(np.mean(achievement) - 2.5) < 0.05


@pytest.mark.parametrize(
    ("reply", "digit"),
    [
        ("Power is very important to me, so my answer is 6.", 6),
        ("Achievement is not important to me at all, so my answer is 1.\n", 1),
        (" 4", 4),
        ("5 - like me", 5),
        ("Rating: 3/6", 3),
        ("I would rate it 2 out of 6.", 2),
        ("On a scale from 1 to 6, I'd choose 4 because I care about it.", 4),
        ("My answer is 3. Security is a little important to me, so my answer is 3.", 3),
        ("This is not like me at all.", 1),
        ("Somewhat like me.", 4),
        ("My answer is 7.", None),
        ("Somewhere between 3 and 4.", None),
        ("I cannot answer that.", None),
        ("", None),
    ],
)
def test_parse_survey_digit(reply, digit):
    assert parse_survey_digit(reply) == digit


def test_builtin_prompt_lists_the_scale(templates):
    for digit, label in SURVEY_SCALE.items():
        assert f"{digit} = {label}" in templates.stage2_prompt.text


def test_completion_override_must_end_with_the_digit(tmp_path):
    (tmp_path / "vim_stage2_completion.txt").write_text("My answer is {digit}: {value} is {importance}.")
    with pytest.raises(ValueharmError, match="must be the last word"):
        VimTemplates.load(tmp_path)
    (tmp_path / "vim_stage2_completion.txt").write_text("For {value} ({importance}) I pick {digit}\n")
    assert VimTemplates.load(tmp_path).sources()["vim_stage2_completion"] == str(tmp_path / "vim_stage2_completion.txt")


# ---------------------------------------------------------------------------------------------------- writing


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_write_vim_data(data_dir, tmp_path):
    out = tmp_path / "vim" / "Pow"
    counts = write_vim_data(get_profile("Pow", data_dir), data_dir, out)
    assert sorted(p.name for p in out.iterdir()) == ["counts.json", "stage1.jsonl", "stage2.jsonl"]
    stage1, stage2 = read_jsonl(out / "stage1.jsonl"), read_jsonl(out / "stage2.jsonl")
    assert set(stage1[0]) == {"prompt", "completion", "argument_id", "polarity", "split"}
    assert set(stage2[0]) == {"prompt", "completion", "argument_id", "value", "score", "split"}
    assert Counter((r["split"], r["polarity"]) for r in stage1)[("test", "pos")] == 2
    assert {r["value"] for r in stage2} == set(VALUES) and {r["split"] for r in stage2} == {"train", "valid"}
    written = json.loads((out / "counts.json").read_text())
    assert written["stage1"] == counts.stage1 and written["stage1"]["train"] == {"pos": 14, "neg": 5885}
    assert written["stage2"]["train"]["total"] == sum(r["split"] == "train" for r in stage2)
    assert written["warnings"] == [] and written["templates"]["vim_stage1_prompt"] == "builtin"
    # Writing again replaces the set; nothing is left beside it.
    write_vim_data(get_profile("Pow", data_dir), data_dir, out, VimDataSettings(seed=1))
    assert json.loads((out / "counts.json").read_text())["seed"] == 1
    assert [p.name for p in out.parent.iterdir()] == ["Pow"]


def test_failed_write_leaves_old_data(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "counts.json").write_text("old")
    original = Path.write_text

    def fail_on_stage2(self, text, *args, **kwargs):
        if self.name == "stage2.jsonl":
            raise OSError(28, "No space left on device")
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fail_on_stage2)
    with pytest.raises(ValueharmError, match="No space left"):
        write_vim_data(uniform("flat", 3), data_dir, out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["counts.json"] and (out / "counts.json").read_text() == "old"


def test_unwritable_or_foreign_out_dir(data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueharmError, match=re.escape(str(blocker / "vim"))):
        write_vim_data(uniform("flat", 3), data_dir, blocker / "vim")
    with pytest.raises(ValueharmError, match="not a directory"):
        write_vim_data(uniform("flat", 3), data_dir, blocker)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "adapter.bin").write_text("keep me")
    with pytest.raises(ValueharmError, match="other files"):
        write_vim_data(uniform("flat", 3), data_dir, tmp_path / "busy")
    assert (tmp_path / "busy" / "adapter.bin").read_text() == "keep me"


def test_missing_data_file(tmp_path):
    with pytest.raises(DataMissingError, match=r"valueEval_10\.csv"):
        build_stage1(uniform("flat", 3), tmp_path)
    with pytest.raises(DataMissingError, match=r"value_split/train\.csv"):
        build_stage2(uniform("flat", 3), tmp_path)
    with pytest.raises(DataMissingError):
        write_vim_data(uniform("flat", 3), tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
