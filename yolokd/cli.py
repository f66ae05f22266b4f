"""The ``yolokd`` command line, Ultralytics-style: ``yolokd COMMAND [CFG.yaml] [key=value ...]``.

Heavy imports (torch, ultralytics, the trainer) happen inside the commands, so ``yolokd --help`` stays fast.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from yolokd.cli_help import COMMAND_HELP, TOP_HELP

HELP_FLAGS = ("-h", "--help")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``yolokd COMMAND ...``; returns the exit code (2 for usage and config errors)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in (*HELP_FLAGS, "help"):
        topic = args[1] if len(args) > 1 and args[0] == "help" else None
        print(COMMAND_HELP.get(topic, TOP_HELP))
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        matches = difflib.get_close_matches(command, list(COMMANDS), n=1)
        suggestion = f"; did you mean '{matches[0]}'?" if matches else ""
        return _fail(f"unknown command '{command}'{suggestion} Commands: {', '.join(COMMANDS)} (yolokd --help)")
    if any(arg in HELP_FLAGS for arg in rest):
        print(COMMAND_HELP[command])
        return 0
    try:
        from yolokd.config import parse_overrides

        words = normalize_args(rest)
        positionals = [word for word in words if "=" not in word]
        overrides = parse_overrides([word for word in words if "=" in word])
        COMMANDS[command](positionals, overrides)
    except (ValueError, FileNotFoundError) as error:  # ConfigError is a ValueError
        if os.environ.get("YOLOKD_TRACEBACK"):  # debugging: the full traceback instead of the one-line message
            raise
        return _fail(str(error))
    return 0


def normalize_args(args: Sequence[str]) -> list[str]:
    """``--key value`` and ``--key=value`` -> ``key=value`` (dashes in the key become underscores)."""
    words, index = [], 0
    while index < len(args):
        arg = args[index]
        if arg.startswith("--") and len(arg) > 2:
            key, has_equals, value = arg[2:].partition("=")
            if not has_equals:
                next_arg = args[index + 1] if index + 1 < len(args) else None
                if next_arg is None or next_arg.startswith("--") or "=" in next_arg:
                    value = "true"  # a bare flag: --amp
                else:
                    value, index = next_arg, index + 1
            arg = f"{key.replace('-', '_')}={value}"
        words.append(arg)
        index += 1
    return words


def _fail(message: str) -> int:
    print(f"yolokd: error: {message}", file=sys.stderr)
    return 2


def _no_positionals(command: str, positionals: list[str], usage: str) -> None:
    if positionals:
        raise ValueError(f"'{command}' takes key=value arguments only, got {positionals}; usage: {usage}")


def _check_keywords(function: Callable[..., Any], kwargs: dict[str, Any], command: str) -> None:
    """Raise a ValueError with a suggestion for a key the command's function does not accept."""
    parameters = inspect.signature(function).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return
    for key in kwargs:
        if key not in parameters:
            matches = difflib.get_close_matches(key, list(parameters), n=1)
            suggestion = f" (did you mean '{matches[0]}'?)" if matches else ""
            raise ValueError(f"{key}: unknown argument of '{command}'{suggestion}. Valid: {', '.join(parameters)}")


def _train(positionals: list[str], overrides: dict[str, Any]) -> None:
    from yolokd.config import load_experiment

    if len(positionals) > 1:
        raise ValueError(f"'train' takes one config file, got {positionals}")
    resume = overrides.pop("resume", None)
    if resume is not None and not isinstance(resume, (str, bool)):
        raise ValueError(f"resume: expected a path to last.pt or true/false, got {resume!r}")
    if positionals:
        experiment = load_experiment(positionals[0], overrides)
    elif not isinstance(resume, str):
        raise ValueError(
            "'train' needs an experiment config: yolokd train CFG.yaml [key=value ...] "
            "(or resume=path/to/last.pt to continue a run)"
        )
    elif overrides:
        raise ValueError(
            f"resume={resume} continues the run with the experiment saved beside it; it takes no "
            f"other key=value (got {', '.join(overrides)})"
        )
    else:
        experiment = None
    if experiment is not None and not experiment.distill:  # valid (a baseline run), but say so
        print("yolokd: no distill methods (and no teacher): the student trains alone, as plain Ultralytics training")
    from yolokd.engine.trainer import train_experiment

    run_dir = train_experiment(experiment, resume=resume or None)
    print(f"yolokd: run saved to {run_dir}")


def _qat(positionals: list[str], overrides: dict[str, Any]) -> None:
    if "resume" in overrides:  # a QAT run saved its experiment with quantize=8: resuming it is a train resume
        return _train(positionals, overrides)
    if len(positionals) != 1:
        raise ValueError(
            f"'qat' takes one config file: yolokd qat CFG.yaml model=best.pt [key=value ...], got {positionals}"
        )
    from yolokd.quant.qat import qat_experiment

    experiment = qat_experiment(positionals[0], overrides)
    from yolokd.engine.trainer import train_experiment

    run_dir = train_experiment(experiment)
    print(
        f"yolokd: QAT run saved to {run_dir}; its INT8 ONNX: yolokd export model={run_dir}/weights/best.pt format=onnx"
    )


def _check_data_path(overrides: dict[str, Any]) -> None:
    """A ``data=`` path that does not exist is refused before any model is loaded or file written (a bare name such
    as ``coco8.yaml`` is Ultralytics' to resolve)."""
    data = overrides.get("data")
    if data and "/" in str(data) and not Path(str(data)).exists():
        raise FileNotFoundError(f"data: '{data}' does not exist")


def _val(positionals: list[str], overrides: dict[str, Any]) -> None:
    _no_positionals("val", positionals, "yolokd val model=best.pt data=data.yaml")
    model = overrides.pop("model", None)
    if not model:
        raise ValueError("model: 'val' needs model=path/to/best.pt")
    if "/" in str(model) and not Path(model).exists():  # a bare name like yolov8n.pt is Ultralytics' to download
        raise FileNotFoundError(f"model: {model} not found")
    _check_data_path(overrides)
    from yolokd.evaluation.validate import validate_model

    result = validate_model(model, **overrides)
    print(result)
    print(f"yolokd: metrics saved to {result.files['metrics']}")


def _export(positionals: list[str], overrides: dict[str, Any]) -> None:
    _no_positionals("export", positionals, "yolokd export model=best.pt format=onnx|engine [key=value ...]")
    model = overrides.pop("model", None)
    if not model:
        raise ValueError("model: 'export' needs model=path/to/best.pt")
    _check_data_path(overrides)
    from yolokd.export.exporter import export_model
    from yolokd.export.plan import TensorRTUnavailableError

    try:
        result = export_model(model, overrides.pop("profile", None), **overrides)
    except TensorRTUnavailableError as error:
        raise ValueError(f"format=engine: {error}") from error
    for name, path in result.files.items():
        print(f"{name:<14}{path}")
    for warning in result.warnings:
        print(f"yolokd: WARNING: {warning}", file=sys.stderr)
    if result.problems:
        raise ValueError(f"export checks failed ({'; '.join(result.problems)}); see {result.files['report_md']}")


def _benchmark(positionals: list[str], overrides: dict[str, Any]) -> None:
    _no_positionals("benchmark", positionals, "yolokd benchmark model=best.pt,best.onnx imgsz=640 batch=1,8")
    if not overrides.get("model"):
        raise ValueError("model: 'benchmark' needs model=path (or a comma list of .pt/.onnx/.engine files)")
    from yolokd.export.benchmark import run_benchmark

    _check_keywords(run_benchmark, overrides, "benchmark")
    result = run_benchmark(**overrides)
    print(result.files["md"].read_text())
    print(f"yolokd: benchmark saved to {result.folder}")


def _demo(positionals: list[str], overrides: dict[str, Any]) -> None:
    _no_positionals("demo", positionals, "yolokd demo [key=value ...]")
    from yolokd.demo import run_demo

    _check_keywords(run_demo, overrides, "demo")
    result = run_demo(**overrides)
    if result is not None:
        print(result)


def _balance(positionals: list[str], overrides: dict[str, Any]) -> None:
    from yolokd.config import load_experiment

    if len(positionals) != 1:
        raise ValueError(f"'balance' takes one config file: yolokd balance CFG.yaml [key=value ...], got {positionals}")
    experiment = load_experiment(positionals[0], overrides)
    from yolokd.engine.trainer import measure_experiment_balance

    report, folder = measure_experiment_balance(experiment)
    print(report.markdown())
    print(f"yolokd: balance saved to {folder / 'kd_balance.md'} and kd_balance.json")


def _tune(positionals: list[str], overrides: dict[str, Any]) -> None:
    if len(positionals) != 1:
        raise ValueError(f"'tune' takes one config file: yolokd tune CFG.yaml [iterations=10 ...], got {positionals}")
    from yolokd.engine.tune import TUNE_KEYS, tune_experiment

    options = {key: overrides.pop(key) for key in TUNE_KEYS if key in overrides}
    best = tune_experiment(positionals[0], overrides, **options)
    print(f"yolokd: best experiment saved to {best}; train it with: yolokd train {best}")


def _data(positionals: list[str], overrides: dict[str, Any]) -> None:
    _no_positionals("data", positionals, "yolokd data root=DIR [num_train=... num_val=... imgsz=... seed=... task=...]")
    if "root" not in overrides:
        raise ValueError("root: 'data' needs root=DIR, the folder to write the synthetic set to")
    from yolokd.data.synthetic import make_synthetic_dataset

    _check_keywords(make_synthetic_dataset, overrides, "data")
    print(make_synthetic_dataset(**overrides))


def _check(positionals: list[str], overrides: dict[str, Any]) -> None:
    import yaml

    from yolokd.config import load_experiment

    if len(positionals) != 1:
        raise ValueError(f"'check' takes one config file: yolokd check CFG.yaml [key=value ...], got {positionals}")
    experiment = load_experiment(positionals[0], overrides)
    print(f"# {experiment.source}: valid")
    print(yaml.safe_dump(experiment.to_dict(), sort_keys=False, allow_unicode=True), end="")


def _methods(positionals: list[str], overrides: dict[str, Any]) -> None:
    if positionals or overrides:
        raise ValueError("'methods' takes no arguments; usage: yolokd methods")
    from yolokd.losses import LOSSES

    for name, loss_cls in LOSSES.items():
        module_doc = sys.modules[loss_cls.__module__].__doc__ or loss_cls.__doc__ or ""
        print(f"{name}: {module_doc.strip().splitlines()[0] if module_doc.strip() else ''}")
        descriptions = attribute_docs(loss_cls.Params)
        rows = [("parameter", "type", "default", "description")]
        for field in fields(loss_cls.Params):
            default = field.default if field.default is not MISSING else field.default_factory()  # type: ignore[misc]
            field_type = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", field.type)
            rows.append((field.name, str(field_type), str(default), descriptions.get(field.name, "")))
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        for row in rows:
            columns = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
            print("  " + "  ".join([*columns, row[3]]))
        print()


def attribute_docs(cls: type) -> dict[str, str]:
    """First sentence of each entry in the ``Attributes:`` sections of `cls` and its bases' docstrings."""
    descriptions: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        lines = inspect.cleandoc(klass.__dict__.get("__doc__") or "").splitlines()
        start = next((index + 1 for index, line in enumerate(lines) if line.strip() == "Attributes:"), len(lines))
        current = None
        for line in lines[start:]:
            if not line.strip() or not line.startswith(" "):
                break  # a blank line or the next section ends the Attributes section
            entry = re.match(r"^ {1,4}(\w+)(?: \(.*?\))?:\s*(.*)$", line)
            if entry:
                current = entry.group(1)
                descriptions[current] = entry.group(2)
            elif current:
                descriptions[current] += " " + line.strip()
    return {key: re.split(r"(?<=\.)\s", text, maxsplit=1)[0] for key, text in descriptions.items()}


def _compare(positionals: list[str], overrides: dict[str, Any]) -> None:
    if not positionals:
        raise ValueError("'compare' needs run folders: yolokd compare RUN_DIR... [baseline=DIR] [teacher=DIR]")
    from yolokd.evaluation.compare import compare_runs

    _check_keywords(compare_runs, overrides, "compare")
    result = compare_runs(positionals, **overrides)
    print(result.markdown())
    print(f"yolokd: comparison saved to {result.files['markdown'].parent}")


def _study(positionals: list[str], overrides: dict[str, Any]) -> None:
    _no_positionals("study", positionals, "yolokd study methods=bckd,mimic seeds=0,1,2 [cfg=... data=... teacher=...]")
    from yolokd.evaluation.study import run_study, study

    _check_keywords(study, {k: v for k, v in overrides.items() if k != "preset"}, "study")
    report = run_study(**overrides)
    print(report.markdown())
    print(f"yolokd: study saved to {report.settings['out']}")


COMMANDS: dict[str, Callable[[list[str], dict[str, Any]], None]] = {
    "train": _train,
    "qat": _qat,
    "val": _val,
    "export": _export,
    "benchmark": _benchmark,
    "check": _check,
    "balance": _balance,
    "tune": _tune,
    "methods": _methods,
    "data": _data,
    "demo": _demo,
    "compare": _compare,
    "study": _study,
}

if __name__ == "__main__":
    sys.exit(main())
