"""Evaluation steps on a run directory: `generate`, `score`, `metrics`, `calibrate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from valueharm import paths
from valueharm.cli.common import (
    Base,
    ChatOption,
    DataDir,
    FromSettings,
    JsonFlag,
    ProfileFiles,
    ProfileNames,
    ProfileSets,
    Progress,
    TemplateDir,
    app,
    chat_setting,
    existing_store,
    key_values,
    out,
    print_json,
    resolve_profiles,
    scalar,
    with_settings,
)
from valueharm.errors import ValueharmError
from valueharm.settings import GenerationSettings, ItemSelection, MetricsSettings, SamplingSettings, ScoringSettings


@app.command("generate")
@with_settings(
    selection=FromSettings(ItemSelection),
    sampling=FromSettings(SamplingSettings),
    generation=FromSettings(GenerationSettings, exclude=("options",)),
)
def generate(
    base: Base,
    benchmark: Annotated[str, typer.Option(help="rtp, holisticbiasr, hex-phi, beavertails or advbench.")],
    run: Annotated[Path, typer.Option("--run", help="Run directory (results.sqlite is written there).")],
    selection: ItemSelection,
    sampling: SamplingSettings,
    generation: GenerationSettings,
    method: Annotated[str, typer.Option(help="vanilla, vim, icl or benign.")] = "vanilla",
    profile: ProfileNames = None,
    profile_set: ProfileSets = None,
    profiles_file: ProfileFiles = None,
    dataset: Annotated[list[str] | None, typer.Option(help="Benign dataset(s), for --method benign.")] = None,
    adapter: Annotated[
        list[str] | None,
        typer.Option(help="NAME=DIR: the adapter of a profile or benign dataset (default RUN/adapters/METHOD/NAME)."),
    ] = None,
    mitigation: Annotated[str | None, typer.Option(help="safety, value or dual.")] = None,
    set_aside: Annotated[str | None, typer.Option(help="Comma-separated values the value instruction names.")] = None,
    backend_option: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE for the backend, e.g. base_url=…, model=… (repeatable).")
    ] = None,
    template_dir: TemplateDir = None,
    chat: ChatOption = "auto",
    data_dir: DataDir = None,
    progress: Progress = True,
) -> None:
    """Generate a method's continuations of a benchmark into the run's store (re-running resumes).

    Everything is checked and the backend is loaded before the store is opened: a failed start leaves no files.
    """
    from valueharm import base_model
    from valueharm.alignment.prompts import ModelSpec, PromptTemplates
    from valueharm.chat import chat_style
    from valueharm.data.benchmarks import BENCHMARKS, select_items
    from valueharm.generation.run import generate_slice, open_backend, sampling_params
    from valueharm.store import RunStore

    directory = paths.data_dir(data_dir)
    chosen = BENCHMARKS.get(benchmark)
    adapters = key_values(adapter, "--adapter")
    aside = tuple(v.strip() for v in set_aside.split(",")) if set_aside else ()

    def spec(profile_=None, dataset_=None) -> ModelSpec:
        name = dataset_ or (profile_.name if profile_ else None)
        path = (
            Path(adapters.get(name) or run / "adapters" / method / str(name)) if method in {"vim", "benign"} else None
        )
        return ModelSpec(method, profile_, dataset_, path, mitigation, aside)

    if method == "benign":
        specs = [spec(dataset_=name) for name in dataset or []] or [spec()]
    elif method == "vanilla":
        specs = [spec()]
    else:
        specs = [spec(p) for p in resolve_profiles(profile, profile_set, profiles_file, directory)]
    templates = PromptTemplates.load(template_dir)
    params = sampling_params(chosen, templates, seed=generation.seed, temperature=sampling.temperature,
                             top_p=sampling.top_p, max_new_tokens=sampling.max_new_tokens)  # fmt: skip
    items = select_items(chosen, directory, selection)
    setting = chat_setting(chat)
    options = {key: scalar(value) for key, value in key_values(backend_option, "--backend-option").items()}
    base = base_model.resolve(base, data_dir=directory, loads_here=generation.backend in {"hf", "vllm"},
                              trust_remote_code=options.get("trust_remote_code") is True, progress=progress)
    served = open_backend(generation.backend, base, specs, **options)
    try:
        try:
            system_turn = chat_style(setting, base)
        except ValueharmError:
            if setting is True:
                raise
            system_turn = None  # auto, and no tokenizer here (a model only a server has): raw-text prompts
        with RunStore(run / "results.sqlite") as store:
            summary = generate_slice(store, served, specs, chosen, items, base_model=base_model.identity(base),
                                     params=params, samples=sampling.samples or chosen.defaults.samples,
                                     templates=templates, chat_system_turn=system_turn, progress=progress)  # fmt: skip
    finally:
        served.close()
    out.print(
        f"{chosen.name}: {summary.planned} planned, {summary.already_stored} already stored, "
        f"{summary.generated} generated ({summary.failed} failed) → {run / 'results.sqlite'}"
    )
    if summary.failed:
        raise typer.Exit(1)


@app.command("score")
@with_settings(scoring=FromSettings(ScoringSettings))
def score(
    run: Annotated[Path, typer.Option("--run", help="Run directory.")],
    scorer: Annotated[list[str], typer.Option(help="NAME[:key=value,…] (repeatable), e.g. lexicon, refusal.")],
    scoring: ScoringSettings,
    benchmark: Annotated[
        list[str] | None, typer.Option(help="Only these benchmarks (default: all it applies to).")
    ] = None,
    data_dir: DataDir = None,
    progress: Progress = True,
) -> None:
    """Score a run's generations; what is already scored is skipped, so re-running makes no model or API call."""
    from valueharm.data.benchmarks import BENCHMARKS
    from valueharm.scoring.base import build_scorer
    from valueharm.scoring.run import score_run
    from valueharm.store import RunStore

    for name in benchmark or []:  # all valid before work
        BENCHMARKS.get(name)
    scorers = [build_scorer(spec, data_dir=paths.data_dir(data_dir)) for spec in scorer]
    with RunStore(existing_store(run)) as store:
        for built in scorers:
            summary = score_run(store, built, benchmarks=benchmark, batch_size=scoring.batch_size, progress=progress)
            out.print(f"{summary.scorer}: {summary.scored} scored ({summary.errors} failed), {summary.cached} cached")


@app.command("metrics")
@with_settings(bootstrap=FromSettings(MetricsSettings))
def metrics(
    bootstrap: MetricsSettings,
    run: Annotated[Path | None, typer.Option("--run", help="Run directory.")] = None,
    imported: Annotated[
        Path | None, typer.Option("--import", help="Records made elsewhere (jsonl, csv or parquet: the export format).")
    ] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Also write the table as CSV.")] = None,
    template_dir: TemplateDir = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Compute every metric with bootstrap CIs from a run (or imported records) and print the table; each row's
    `label` says whether it is computed as published or as ours (or which half is which)."""
    import csv
    import tempfile

    from valueharm.data.benchmarks import BENCHMARKS
    from valueharm.exchange import import_into
    from valueharm.metrics import compute_metrics, published_label
    from valueharm.scoring.echoes import echo_detector
    from valueharm.store import RunStore

    if (run is None) == (imported is None):
        raise ValueharmError("give either --run DIR or --import FILE")
    echoes = echo_detector(template_dir)  # the run's VIM templates: their echoes are degenerate answers
    with tempfile.TemporaryDirectory() as scratch:
        path = existing_store(run) if run else Path(scratch) / "imported.sqlite"
        with RunStore(path) as store:
            if imported:
                import_into(store, imported)
            metadata = {}
            if "holisticbiasr" in {b for b, _ in store.count_generations()}:
                items = BENCHMARKS.get("holisticbiasr").load(paths.data_dir(data_dir), preferences=None)
                metadata = {item.item_id: item.metadata for item in items}
            computed = compute_metrics(
                store, metadata, seed=bootstrap.seed, n_boot=bootstrap.n_boot,
                published_bias_score=bootstrap.published_bias_score, echoes=echoes,
            )  # fmt: skip
            rows = [row.to_dict() | {"label": published_label(row.metric, row.scorer)} for row in computed]
    if csv_out:
        with csv_out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["metric"])
            writer.writeheader()
            writer.writerows(rows)
    if as_json:
        print_json(rows)
        return
    table = Table("benchmark", "model", "metric", "variant", "category", "scorer", "value [95% CI]", "n", "failed")
    for row in rows:
        value = _with_ci(row["value"], row["ci_low"], row["ci_high"])
        metric = f"{row['metric']} ({row['label']})" if row["label"] else row["metric"]
        table.add_row(row["benchmark"], row["model_key"], metric, row["variant"], row["category"], row["scorer"],
                      value, str(row["n_used"]), str(row["n_failed"]))  # fmt: skip
    out.print(table)


@app.command("calibrate")
@with_settings(scoring=FromSettings(ScoringSettings), bootstrap=FromSettings(MetricsSettings))
def calibrate(
    run: Annotated[Path, typer.Option("--run", help="Run directory with RTP generations.")],
    scorer: Annotated[str, typer.Option(help="The local toxicity scorer, e.g. classifier:model=toxicity.")],
    scoring: ScoringSettings,
    bootstrap: MetricsSettings,
    against: Annotated[str, typer.Option(help="The reference scorer spec.")] = "perspective",
    data_dir: DataDir = None,
    progress: Progress = True,
    as_json: JsonFlag = False,
) -> None:
    """Score the run's RTP generations with a local scorer and a reference (Perspective), and report how they
    agree: correlations, EMT and toxicity probability both ways, and the local threshold matching the reference's."""
    from valueharm.scoring.base import ScorerKind, build_scorer
    from valueharm.scoring.calibration import BENCHMARK, calibrate_run
    from valueharm.scoring.run import score_run
    from valueharm.store import RunStore

    specs = {"reference": ("--against", against), "local": ("--scorer", scorer)}
    built = {side: build_scorer(spec, data_dir=paths.data_dir(data_dir)) for side, (_, spec) in specs.items()}
    for side, (option, spec) in specs.items():
        if built[side].kind is not ScorerKind.TOXICITY:
            kind = built[side].kind.value
            raise ValueharmError(f"{option} {spec!r}: a {kind} scorer; calibration compares toxicity scorers")
    with RunStore(existing_store(run)) as store:
        if BENCHMARK not in {benchmark for benchmark, _ in store.count_generations()}:
            raise ValueharmError(f"{run}: no RTP generations to calibrate on")
        for one in built.values():
            score_run(store, one, benchmarks=[BENCHMARK], batch_size=scoring.batch_size, progress=progress)
        result = calibrate_run(store, built["reference"].id, built["local"].id, n_boot=bootstrap.n_boot,
                               seed=bootstrap.seed)  # fmt: skip
    if as_json:
        print_json(result.to_json())
        return
    out.print(f"{result.local} against {result.reference}: {result.n_samples} samples, {result.n_prompts} prompts")
    spearman = _with_ci(result.spearman, None, None)
    out.print(f"  Pearson r {_with_ci(result.pearson, *result.pearson_ci)}, Spearman ρ {spearman}")
    table = Table("model", "metric", "reference [95% CI]", "local [95% CI]")
    for m in result.metrics:
        table.add_row(m.model_key, m.metric, _with_ci(m.reference.value, m.reference.ci_low, m.reference.ci_high),
                      _with_ci(m.local.value, m.local.ci_low, m.local.ci_high))  # fmt: skip
    out.print(table)
    out.print(
        f"  matched threshold {_with_ci(result.matched_threshold, *result.matched_threshold_ci)}: local toxicity "
        f"probability {_with_ci(result.local_probability_at_matched, None, None)} there"
    )
    for note in result.notes:
        out.print(f"  note: {note}")
    out.print(f"  stored in {run}; `valueharm report --run {run}` shows it in the report")


def _with_ci(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")
