from collections import Counter
from pathlib import Path

import pytest

from valueharm.errors import UnknownNameError, ValueharmError
from valueharm.values import (
    HIGHER_ORDER,
    VALUES,
    ValueProfile,
    canonical_value,
    get_profile,
    profile_set,
    published_family,
    read_profile_file,
    resolve_profiles,
)


def test_ten_values_in_four_groups():
    assert len(VALUES) == 10
    members = [value for group in HIGHER_ORDER.values() for value in group]
    assert sorted(members) == sorted(VALUES)


@pytest.mark.parametrize(
    ("name", "size"),
    [("vim154", 154), ("vim56", 56), ("extremes", 14), ("reverse", 28), ("ess-countries", 28), ("ess-groups", 100)],
)
def test_profile_set_sizes(data_dir: Path, name: str, size: int):
    profiles = profile_set(name, data_dir)
    assert len(profiles) == size
    assert len({p.name for p in profiles}) == size


def test_vim154_is_extremes_plus_close(data_dir: Path):
    names = [p.name for p in profile_set("vim154", data_dir)]
    assert sum(not n.startswith("close_") for n in names) == 14
    assert sum(n.startswith("close_") for n in names) == 140


def test_power_extreme(data_dir: Path):
    power = get_profile("Pow", data_dir)
    assert power.scores["Power"] == 6
    assert all(score == 1 for value, score in power.scores.items() if value != "Power")
    assert power.group_score("Self-Enhancement") == pytest.approx((1 + 1 + 6) / 3)


def test_unknown_profile_lists_close_matches(data_dir: Path):
    with pytest.raises(UnknownNameError, match="did you mean: Pow"):
        get_profile("Pwo", data_dir)


def test_unknown_set(data_dir: Path):
    with pytest.raises(UnknownNameError, match=r"unknown profile set 'vim155'.*vim154"):
        profile_set("vim155", data_dir)


def test_value_aliases():
    assert canonical_value("self_direction") == "Self-direction"
    assert canonical_value("SD") == "Self-direction"
    assert canonical_value("universalism") == "Universalism"
    with pytest.raises(UnknownNameError, match="unknown value 'Hedonsim'; did you mean: Hedonism"):
        canonical_value("Hedonsim")


def _scores(**overrides: float) -> dict[str, float]:
    return {value: overrides.get(value, 3.0) for value in VALUES}


def test_profile_validation():
    with pytest.raises(ValueharmError, match="Power: score 7 is outside 1–6"):
        ValueProfile("x", _scores(Power=7))
    with pytest.raises(ValueharmError, match="missing score for Tradition"):
        ValueProfile("x", {v: 3 for v in VALUES if v != "Tradition"})
    with pytest.raises(ValueharmError, match="'high' is not a number"):
        ValueProfile("x", _scores(Power="high"))  # type: ignore[arg-type]
    with pytest.raises(ValueharmError, match="value 'Power' given twice"):
        ValueProfile("x", {**_scores(), "Pow": 4})


def test_custom_yaml_both_shapes(tmp_path: Path):
    listed = tmp_path / "listed.yaml"
    listed.write_text(
        "profiles:\n  - name: thrill\n    scores: {Stimulation: 6, Hedonism: 5.5, Achievement: 2, Benevolence: 2,"
        " Conformity: 1, Power: 3, Security: 1, SD: 4, Tradition: 1, Universalism: 2}\n"
    )
    mapped = tmp_path / "mapped.yml"
    mapped.write_text("calm:\n" + "".join(f"  {value}: 2\n" for value in VALUES))
    (thrill,) = read_profile_file(listed)
    assert thrill.scores["Self-direction"] == 4 and thrill.provenance == "listed.yaml"
    (calm,) = read_profile_file(mapped)
    assert calm.vector == (2.0,) * 10


def test_malformed_yaml_names_the_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("a:\n  Power: 3\n   Tradition: [\n")
    with pytest.raises(ValueharmError, match=r"bad\.yaml:\d+: malformed YAML"):
        read_profile_file(path)


def test_duplicate_profile_in_file(tmp_path: Path):
    path = tmp_path / "dup.yaml"
    row = "{" + ", ".join(f"{v}: 2" for v in VALUES) + "}"
    path.write_text(f"profiles:\n  - {{name: a, scores: {row}}}\n  - {{name: a, scores: {row}}}\n")
    with pytest.raises(ValueharmError, match="duplicate profile name 'a'"):
        read_profile_file(path)


def test_csv_missing_column(tmp_path: Path):
    path = tmp_path / "p.csv"
    header = [v for v in VALUES if v != "Hedonism"]
    path.write_text("name," + ",".join(header) + "\nme," + ",".join("3" for _ in header) + "\n")
    with pytest.raises(ValueharmError, match="missing column\\(s\\) Hedonism"):
        read_profile_file(path)


def test_csv_bad_score_names_the_line(tmp_path: Path):
    path = tmp_path / "p.tsv"
    path.write_text(
        "profile\t" + "\t".join(VALUES) + "\nok\t" + "\t".join("3" for _ in VALUES) + "\n"
        "bad\t" + "\t".join(["9"] + ["3"] * 9) + "\n"
    )
    with pytest.raises(ValueharmError, match=r"'bad' \(p\.tsv line 3\): Achievement: score 9 is outside"):
        read_profile_file(path)


def test_resolve_names_sets_and_files(data_dir: Path, tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("mine:\n" + "".join(f"  {value}: 4\n" for value in VALUES))
    profiles = resolve_profiles(["Pow", "Hed"], ["extremes"], [path], data_dir=data_dir)
    names = [p.name for p in profiles]
    assert names[:2] == ["Pow", "Hed"] and names[-1] == "mine" and len(names) == 15


def test_published_profiles_come_in_families(data_dir: Path):
    families = Counter(p.family for p in profile_set("vim154", data_dir))
    assert len(families) == 14 and set(families.values()) == {11}
    assert families["Self-Enhancement"] == 11 and families["Openness_to_Change"] == 11
    reverse = Counter(p.family for p in profile_set("reverse", data_dir))
    assert len(reverse) == 14 and set(reverse.values()) == {2} and "reverse_Hed" in reverse
    assert [published_family(n) for n in ("close_Hed_7", "close_reverse_Self-Transcendence_1", "Albania")] == [
        "Hed", "reverse_Self-Transcendence", "Albania",
    ]  # fmt: skip
    assert get_profile("Albania", data_dir).family == "Albania"  # an ESS country is its own family


def test_custom_files_give_families(tmp_path: Path):
    scores = ", ".join(f"{v}: 3" for v in VALUES)
    path = tmp_path / "mine.yaml"
    path.write_text(
        f"profiles:\n  - {{name: a, family: twins, scores: {{{scores}}}}}\n  - {{name: b, scores: {{{scores}}}}}\n"
    )
    assert [p.family for p in read_profile_file(path)] == ["twins", "b"]
    path.write_text(f"profiles:\n  - {{name: a, family: [x], scores: {{{scores}}}}}\n")
    with pytest.raises(ValueharmError, match=r"mine\.yaml: profiles\[0\]: family must be a name, got \['x'\]"):
        read_profile_file(path)
    table = tmp_path / "mine.csv"
    table.write_text("name,family," + ",".join(VALUES) + "\n" + "a,twins" + ",3" * 10 + "\nb," + ",3" * 10 + "\n")
    assert [p.family for p in read_profile_file(table)] == ["twins", "b"]
