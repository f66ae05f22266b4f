"""The tables of ``yolokd study``: mean ± std per row, the gain over the baseline and whether it is better, worse or
within seed noise (the 2 SE rule of :mod:`yolokd.evaluation.stats`).

Writes ``study.md`` (summary table, rule, settings, per-seed values), ``study.json`` (everything, per run) and
``study.png`` (mean mAP50-95 per row with ±1 std error bars, the teacher as a dashed line).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from yolokd.evaluation.plots import plot_study_bars
from yolokd.evaluation.stats import NOISE_RULE, PairedGain, SeedSummary, paired_gain, summarize

BASELINE = "baseline"


@dataclass
class RowSummary:
    """One study row over its seeds (mAPs in [0, 1]); gain/gap are None for the baseline."""

    row: str
    map50_95: SeedSummary
    map50: SeedSummary
    coco_ap: SeedSummary
    train_seconds: float
    gain: PairedGain | None
    gap_closed: float | None


@dataclass
class StudyReport:
    """Every run's score, the settings, the teacher's score (None when unknown) and the study's wall time."""

    scores: list[Any]  # RunScore
    settings: dict[str, Any]
    teacher: dict[str, Any] | None
    wall_seconds: float

    def by_row(self, metric: str = "map50_95") -> dict[str, dict[int, float]]:
        """row -> seed -> metric."""
        table: dict[str, dict[int, float]] = {name: {} for name in self.settings["rows"]}
        for score in self.scores:
            table[score.row][score.seed] = getattr(score, metric) if metric != "coco_ap" else _coco_ap(score)
        return table

    def summaries(self) -> list[RowSummary]:
        """One RowSummary per row, in the study's row order."""
        maps, map50s, aps = self.by_row(), self.by_row("map50"), self.by_row("coco_ap")
        baseline = maps.get(BASELINE, {})
        base_mean = summarize(list(baseline.values())).mean
        teacher_map = self.teacher["map50_95"] if self.teacher else math.nan
        summaries = []
        for row in self.settings["rows"]:
            seconds = [score.train_seconds for score in self.scores if score.row == row]
            gain = paired_gain(maps[row], baseline) if row != BASELINE and baseline else None
            gap = teacher_map - base_mean
            gap_closed = None if gain is None else (gain.mean / gap if gap > 0 else math.nan)
            summaries.append(
                RowSummary(
                    row, summarize(list(maps[row].values())), summarize(list(map50s[row].values())),
                    summarize(list(aps[row].values())), sum(seconds) / max(len(seconds), 1), gain, gap_closed,
                )
            )  # fmt: skip
        return summaries

    def markdown(self) -> str:
        """Summary table, the noise rule, the teacher, settings and the per-seed mAP50-95 values."""
        lines = [
            "| row | seeds | mAP50-95 (mean ± std) | mAP50 (mean ± std) | COCO AP (mean) | gain vs baseline (± SE) "
            "| vs baseline (2 SE rule) | gap closed | train s / run |",
            "|---|---:|---:|---:|---:|---:|---|---:|---:|",
        ]
        for summary in self.summaries():
            gain = summary.gain
            gain_text = "" if gain is None else f"{gain.mean:+.4f} ± {_fmt(gain.se, '.4f')}"
            verdict = "" if gain is None else gain.verdict
            gap = "" if summary.gap_closed is None or math.isnan(summary.gap_closed) else f"{summary.gap_closed:.1%}"
            lines.append(
                f"| {summary.row} | {summary.map50_95.n} | {_pm(summary.map50_95)} | {_pm(summary.map50)} | "
                f"{_fmt(summary.coco_ap.mean, '.4f')} | {gain_text} | {verdict} | {gap} | {summary.train_seconds:.0f} |"
            )
        if self.teacher:
            lines.append(
                f"\nTeacher (`{_short_path(self.settings['teacher'])}`): mAP50-95 {self.teacher['map50_95']:.4f}, "
                f"mAP50 {self.teacher['map50']:.4f}."
            )
        lines += [f"\nNoise rule: {NOISE_RULE}.", *self._seed_table(), *self._balance_table(), *self._settings_lines()]
        return "\n".join(lines) + "\n"

    def _seed_table(self) -> list[str]:
        seeds = self.settings["seeds"]
        head = ["", "Per seed, mAP50-95:", "", "| row | " + " | ".join(f"seed {seed}" for seed in seeds) + " |"]
        head.append("|---|" + "---:|" * len(seeds))
        maps = self.by_row()
        return head + [
            f"| {row} | " + " | ".join(_fmt(values.get(s), ".4f") for s in seeds) + " |" for row, values in maps.items()
        ]

    def _balance_table(self) -> list[str]:
        """Each KD row's balance as its first seed's run measured it (``kd_balance.json`` in the run folder)."""
        lines = []
        for row in self.settings["rows"]:
            runs = sorted((s for s in self.scores if s.row == row), key=lambda s: s.seed)
            path = Path(runs[0].run_dir) / "kd_balance.json" if runs else None
            if path is None or not path.is_file():
                continue
            balance = json.loads(path.read_text())
            for method, entry in balance["methods"].items():
                lines.append(
                    f"| {row} | {method} | {balance['weight_mode']} | {entry['measured_share']:.3g} | "
                    f"{entry['scale']:.4g} | {entry['measured_share'] * entry['scale']:.3g} |"
                )
        if not lines:
            return []
        head = [
            "",
            "KD balance (seed " + str(min(self.settings["seeds"])) + "): gradient share of the GT loss's at the start",
            "",
            "| row | method | weight mode | share at paper weights | scale at the start | share after scaling |",
            "|---|---|---|---:|---:|---:|",
        ]
        return head + lines

    def _settings_lines(self) -> list[str]:
        args = self.settings["train_args"]
        keys = ("model", "data", "epochs", "imgsz", "batch", "optimizer", "lr0", "device")
        schedule = ", ".join(f"{key}={args[key]}" for key in keys if key in args)
        train_minutes = sum(score.train_seconds for score in self.scores) / 60
        cached = self.settings.get("cached_runs", 0)
        timing = (
            f"wall time {self.wall_seconds / 60:.1f} min ({cached} of {len(self.scores)} runs read from the cache), "
            f"training time of all runs {train_minutes:.1f} min"
        )
        lines = ["", f"Schedule: {schedule}; {timing}."]
        environment = self.settings.get("environment")
        if environment:  # the numbers depend on the build: two torch builds train the same seed differently
            lines.append("Environment: " + ", ".join(f"{key} {value}" for key, value in environment.items()) + ".")
        return lines

    def to_json(self) -> dict[str, Any]:
        """Settings, teacher, the rule, per-row summaries and every run."""
        rows = [asdict(summary) for summary in self.summaries()]
        return _json_safe(
            {
                "settings": self.settings,
                "teacher": self.teacher,
                "noise_rule": NOISE_RULE,
                "wall_seconds": self.wall_seconds,
                "rows": rows,
                "runs": [asdict(score) for score in self.scores],
            }
        )


def write_report(report: StudyReport, folder: Path) -> dict[str, Path]:
    """``study.md``, ``study.json``, ``study.png`` under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"markdown": folder / "study.md", "json": folder / "study.json", "png": folder / "study.png"}
    files["markdown"].write_text(report.markdown())
    files["json"].write_text(json.dumps(report.to_json(), indent=2) + "\n")
    summaries = report.summaries()
    plot_study_bars(
        [summary.row for summary in summaries],
        [summary.map50_95.mean for summary in summaries],
        [summary.map50_95.std for summary in summaries],
        files["png"],
        teacher=report.teacher["map50_95"] if report.teacher else None,
    )
    return files


def _short_path(path: str) -> str:
    """`path` relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _coco_ap(score: Any) -> float:
    value = (score.coco or {}).get("ap")
    return math.nan if value is None else float(value)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


def _pm(summary: SeedSummary) -> str:
    return f"{summary.mean:.4f} ± {_fmt(summary.std, '.4f')}"


def _json_safe(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value
