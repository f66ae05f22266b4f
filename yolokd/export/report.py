"""The export report: ``<stem>.export.json`` (everything) and ``<stem>.export.md`` (for people), beside the export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _number(value: Any, digits: int = 6) -> str:
    return f"{value:.{digits}g}" if isinstance(value, float) else "-" if value is None else str(value)


def _parity_lines(parity: dict[str, Any]) -> list[str]:
    tolerance = parity["tolerance"]
    found = parity["detections"]
    lines = [
        "",
        f"## Parity with the fp32 PyTorch student ({len(parity['images'])} real images, {parity['precision']})",
        "",
        f"{found['reference_boxes']} PyTorch detections (score >= {found['conf']:g}) matched to the export's "
        f"{found['exported_boxes']} (score >= {found['export_conf']:g}): same class, best IoU, a match from IoU "
        f"{found['match_iou']:g}. Pass/fail reads these (and, for segment models, the prototypes and masks); the "
        "raw-output differences below are information.",
        "",
        *(["Compared:", *[f"- {item}" for item in parity["compared"]], ""] if parity.get("compared") else []),
        "| measure | value | tolerance |",
        "|---|---:|---:|",
    ]
    rows = [
        ("recall of the PyTorch detections", found.get("recall"), f">= {tolerance['recall']:g}"),
        ("mean IoU of matched boxes", found.get("mean_iou"), f">= {tolerance['iou']:g}"),
        ("mean abs score diff of matched boxes", found.get("score_mean_abs"), f"<= {tolerance['score_abs']:g}"),
        ("min IoU of matched boxes", found.get("min_iou"), "information"),
        ("max abs score diff of matched boxes", found.get("score_max_abs"), "information"),
        ("max abs diff of the matched boxes' task values", found.get("task_values_max_abs"), "information"),
    ]
    prototypes, masks = parity.get("prototypes"), parity.get("masks")
    if prototypes is not None:
        proto_limit = tolerance.get("proto_rel")
        rows += [
            (
                "output1 prototypes: max abs diff / max abs PyTorch value",
                prototypes["relative_max_diff"],
                f"<= {proto_limit:g}" if proto_limit is not None else "information",
            ),
            ("output1 prototypes: max abs diff", prototypes["max_abs_diff"], "information"),
            ("output1 prototypes: cosine similarity", prototypes["cosine"], "information"),
        ]
    if masks is not None:
        rows += [
            (
                f"mean mask IoU of matched detections ({masks['matched']})",
                masks["mean_mask_iou"],
                f">= {tolerance['mask_iou']:g}",
            ),
            ("min mask IoU of matched detections", masks["min_mask_iou"], "information"),
        ]
    rows += [
        ("max abs diff, output0, all anchors", parity.get("max_abs_diff"), "information"),
        ("max abs diff, boxes (px)", parity.get("max_abs_diff_boxes_px"), "information"),
        ("max abs diff, class scores", parity.get("max_abs_diff_scores"), "information"),
        ("cosine similarity of the raw outputs", parity.get("cosine"), "information"),
        (
            f"anchor-aligned top-box agreement ({parity.get('agreement_boxes', 0)} boxes)",
            parity.get("top_box_agreement"),
            "information",
        ),
    ]
    return lines + [f"| {name} | {_number(value)} | {limit} |" for name, value, limit in rows]


def _map_lines(result: dict[str, Any]) -> list[str]:
    """mAP of PyTorch vs the export; for a Q/DQ ONNX also the fake-quant PyTorch model it was exported from."""
    fake = result.get("fake_quant")
    lines = ["", "## mAP on the val split", ""]
    if result.get("reference"):
        lines += [f"PyTorch: {result['reference']}.", ""]
    if fake is None:
        lines += ["| metric | PyTorch | export | delta |", "|---|---:|---:|---:|"]
    else:
        lines += [
            f"Fake-quant: the PyTorch model with ModelOpt's quantizers that the ONNX was exported from (the export "
            f"must match it within +-{fake['tolerance_abs']:g}).",
            "",
            "| metric | PyTorch | fake-quant | export | delta vs PyTorch | delta vs fake-quant |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    for key, value in result["pytorch"].items():
        exported, delta = result["exported"][key], result["delta"][key]
        if fake is None:
            lines.append(f"| {key} | {value:.4f} | {exported:.4f} | {delta:+.4f} |")
        else:
            fake_value, fake_delta = fake["pytorch"].get(key), fake["delta"].get(key)  # boxes only
            fake_cells = "- | " if fake_value is None else f"{fake_value:.4f} | "
            lines.append(
                f"| {key} | {value:.4f} | {fake_cells}{exported:.4f} | {delta:+.4f} | "
                + ("- |" if fake_delta is None else f"{fake_delta:+.4f} |")
            )
    return lines


def _quantization_lines(section: dict[str, Any], coverage: dict[str, Any] | None) -> list[str]:
    """How the INT8 model was made, which layers stay in float and why, and the ONNX's Q/DQ coverage."""
    calibration = section["calibration"]
    if section["method"] == "PTQ":
        how = (
            f"PTQ, {calibration['method']} calibration on {calibration['images']} images of the "
            f"'{calibration['split']}' split of `{calibration['data']}` ({calibration['batches']} batches)"
        )
    else:
        how = f"QAT checkpoint: {calibration['note']}; started from `{calibration.get('qat_source') or 'unknown'}`"
    lines = [
        "",
        "## INT8 quantization",
        "",
        f"- {how}; {section['seconds']} s",
        f"- {section['library']} through {section['quantizer']}",
        f"- scheme: {section['scheme']}",
    ]
    if coverage is not None:
        lines.append(
            f"- ONNX: {coverage['int8']} of {coverage['layers']} convolutions with Q/DQ on input and weight "
            f"({coverage['quantize_nodes']} QuantizeLinear, {coverage['dequantize_nodes']} DequantizeLinear); "
            + ("every other one is listed below" if not coverage["problems"] else f"FAILED: {coverage['problems']}")
        )
    layers = section["float_layers"]
    lines += ["", f"Kept in float ({len(layers)} weighted layers; each reason once):", ""]
    for reason in dict.fromkeys(layer["reason"] for layer in layers):
        named = ", ".join(f"`{layer['name']}` ({layer['output']})" for layer in layers if layer["reason"] == reason)
        lines.append(f"- {named}: {reason}")
    return lines


def export_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: files, options, checks with their tolerances, problems and warnings first."""
    source = report["source"]
    verdict = "PASSED" if report.get("passed") else "FAILED"
    lines = [f"# Export report: {Path(report['exported']).name} ({report['precision']}) — checks {verdict}", ""]
    lines += [f"- **WARNING: {warning}**" for warning in report.get("warnings", [])]
    lines += [f"- **FAILED: {problem}**" for problem in report.get("problems", [])]
    lines += [
        f"- source: `{source['model']}` ({source['architecture']}, {source['classes']} classes, "
        f"{source['parameters'] / 1e6:.3f} M parameters, {source['gflops']} GFLOPs at {source['imgsz']})",
        f"- profile: {report.get('profile') or '-'}; exported in {report['export_seconds']} s; "
        f"file precision {report['file_precision']}",
        "- versions: " + ", ".join(f"{name} {version}" for name, version in report["versions"].items()),
        "",
        "| file | bytes |",
        "|---|---:|",
    ]
    lines += [f"| `{Path(entry['path']).name}` | {entry['bytes']} |" for entry in report.get("files", {}).values()]
    options = report["options"]
    lines += ["", "Options: " + ", ".join(f"`{key}={value}`" for key, value in options.items() if key != "description")]
    if "quantization" in report:
        lines += _quantization_lines(report["quantization"], (report.get("checks") or {}).get("qdq"))
    checks = report.get("checks")
    if not isinstance(checks, dict):
        return "\n".join([*lines, "", f"Checks: {checks}"]) + "\n"
    if "graph" in checks:
        graph = checks["graph"]
        lines += [
            "",
            "## ONNX graph",
            f"inputs {graph['inputs']}, outputs {graph['outputs']}; onnx.checker and names "
            + ("ok" if not graph["problems"] else f"FAILED: {graph['problems']}"),
        ]
    lines += _parity_lines(checks["parity"])
    if "map" in checks:
        lines += _map_lines(checks["map"])
    if "plain" in checks:
        plain = checks["plain"]
        lines += [
            "",
            "## No KD residue",
            f"same graph as a plain `{plain['architecture']}` export: "
            f"{plain['same_graph']} ({plain['exported']['nodes']} nodes, {plain['exported']['parameters']} weight "
            f"elements read; PyTorch parameters {plain['torch_parameters']})",
        ]
    return "\n".join(lines) + "\n"


def write_export_report(report: dict[str, Any], exported: Path) -> dict[str, Path]:
    """Write ``<stem>.export.json`` and ``<stem>.export.md`` next to the exported model."""
    paths = {
        "report_json": exported.with_name(f"{exported.stem}.export.json"),
        "report_md": exported.with_name(f"{exported.stem}.export.md"),
    }
    paths["report_json"].write_text(json.dumps(report, indent=1, default=str) + "\n")
    paths["report_md"].write_text(export_markdown(report))
    return paths
