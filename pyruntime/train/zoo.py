"""Packaging a pipeline run as the shipped student: pyruntime/zoo/fashion_mnist_student.onnx
with its card fashion_mnist_student.json (numbers a test checks) and README.md (for people).
`ship_recalibrated` refreshes them after `python -m pyruntime.train recalibrate`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .gates import describe_target

ZOO = Path(__file__).resolve().parent.parent / "zoo"
NAME = "fashion_mnist_student"
COMMAND = "python -m pyruntime.train fashion-mnist --out runs/fashion-mnist --zoo"
REPORT_HEADING = "## The pipeline's report"


def card_from_report(rep: dict) -> dict:
    t, s, q = rep["teacher"], rep["student"], rep["int8"]
    ex = q["exits"]
    return {
        "name": NAME,
        "file": f"{NAME}.onnx",
        "task": "Fashion-MNIST classification, 10 classes",
        "input": {"name": "input", "dtype": "float32", "shape": ["N", 1, 28, 28],
                  "range": "pixels scaled to [0, 1] (raw uint8 / 255); no other normalization"},
        "outputs": [ex["metadata"]["final"]] + [e["output"] for e in ex["metadata"]["exits"]],
        "exits": ex["metadata"],
        "accuracy_test": {
            "teacher_fp32": t["test_acc"],
            "student_hard_fp32": s["hard"]["test_acc"],
            "student_distilled_fp32": s["distilled"]["test_acc"],
            "int8": q["test_acc"],
            "int8_with_exits": ex["test"]["accuracy"],
        },
        "expected_macs_fraction_test": ex["test"]["expected_macs"],
        "exit_histogram_test": ex["histogram"],
        "exit_rates_test": [r["rate"] for r in ex["test"]["per_exit"]],
        "macs": {"teacher": t["macs"], "student": s["macs"], "int8_graph_with_gates": q["graph_macs"],
                 "int8_expected_with_exits": ex["test"]["expected_macs"] * q["graph_macs"]},
        "params": {"teacher": t["params"], "student": s["params"]},
        "quantization": {"weights": "s8 symmetric per output channel", "activations": "u8 per tensor, zero point 0",
                         "bias": "int32", "calibration": q["ptq_method"], "qat": q["qat"]},
        "evaluation": "onnxruntime CPU, graph optimizations disabled (the QDQ graph as written); "
                      "exits applied per the pyruntime.exits contract from the outputs of every head",
        "training": {"teacher": t["config"], "student": s["config"], "student_train": s["train"],
                     "distillation": {"T": s["T"], "alpha": s["alpha"], "anneal": s["anneal"]},
                     "gates": rep["config"]["gates"], "calibration_target": ex["calibration"]["target"]},
        "command": COMMAND,
    }


def render_readme(card: dict, report_md: str) -> str:
    a = card["accuracy_test"]
    L = [f"# {card['name']}", "",
         "An int8 (QDQ ONNX) early-exit student for Fashion-MNIST, made by `pyruntime.train`:",
         "a ResNet teacher distilled into a small CNN (Hinton KD), hinge-loss decision gates at two",
         "stage boundaries (Shafiee et al.), int8 post-training quantization (QAT with distillation",
         "from the fp32 student when PTQ loses more than 0.3pp).", "",
         f"- File: `{card['file']}`; numbers for tests: `{NAME}.json`.",
         f"- Input `input`: {card['input']['dtype']} {card['input']['shape']}, {card['input']['range']}.",
         f"- Outputs: {', '.join('`' + o + '`' for o in card['outputs'])} (output 0 is the final head; "
         "one per gate; raw class scores, hinge scores for gates).",
         f"- Remake: `{card['command']}` (then commit `pyruntime/zoo/`).", "",
         "| | test accuracy |", "|---|---|",
         f"| teacher fp32 | {100 * a['teacher_fp32']:.2f}% |",
         f"| student fp32, hard labels | {100 * a['student_hard_fp32']:.2f}% |",
         f"| student fp32, distilled | {100 * a['student_distilled_fp32']:.2f}% |",
         f"| this model, full graph | {100 * a['int8']:.2f}% |",
         f"| this model, with exits | {100 * a['int8_with_exits']:.2f}% at "
         f"{100 * card['expected_macs_fraction_test']:.1f}% expected MACs |", "",
         "| gate output | rule | threshold | macs_fraction | exit rate (test) |", "|---|---|---|---|---|"]
    for e, r in zip(card["exits"]["exits"], card["exit_rates_test"]):
        L.append(f"| {e['output']} | {e['rule']} | {e['threshold']:.6g} | {e['macs_fraction']:.4f} | {100 * r:.1f}% |")
    L += ["", f"Thresholds chosen for {describe_target(card['training']['calibration_target'])}.", "",
          f"MACs per image: teacher {card['macs']['teacher'] / 1e6:.2f} M, student "
          f"{card['macs']['student'] / 1e6:.2f} M, this graph with gates {card['macs']['int8_graph_with_gates'] / 1e6:.2f} M, "
          f"expected with exits {card['macs']['int8_expected_with_exits'] / 1e6:.2f} M. Parameters: teacher "
          f"{card['params']['teacher']:,}, student {card['params']['student']:,}.", ""]
    rc = card.get("recalibration")
    if rc:
        v = rc["validation"]
        L += ["## Recalibrated exit thresholds", "",
              f"The thresholds above were chosen again after the pipeline run, without retraining: `{rc['command']}`. "
              f"On the validation split: {100 * v['accuracy_with_exits']:.2f}% with exits vs {100 * v['accuracy']:.2f}% "
              f"full graph (drop {100 * v['drop']:.2f}pp; upper bound {100 * v['drop_bound']:.2f}pp"
              f"{' on the held-out part' if card['training']['calibration_target'].get('holdout') else ''}), "
              f"{100 * v['expected_macs_fraction']:.1f}% expected MACs, exit rates "
              f"{' / '.join(f'{100 * r:.1f}%' for r in v['exit_rates'])}. On the test set: "
              f"{100 * (a['int8'] - a['int8_with_exits']):.2f}pp drop. The pipeline's report below keeps the run's "
              "original thresholds and early-exit numbers.", ""]
    L += [REPORT_HEADING, "", report_md.replace("![", "(plot: ").replace(".png)", ".png in the run directory)")]
    return "\n".join(L) + "\n"


def ship(run_dir, zoo: Path = ZOO) -> Path:
    """Copies a finished run (its ONNX file and report.json) into the zoo with its card."""
    run_dir = Path(run_dir)
    rep = json.loads((run_dir / "report.json").read_text())
    zoo.mkdir(parents=True, exist_ok=True)
    dst = zoo / f"{NAME}.onnx"
    shutil.copyfile(run_dir / "student_int8_exits.onnx", dst)
    card = card_from_report(rep)
    (zoo / f"{NAME}.json").write_text(json.dumps(card, indent=1) + "\n")
    (zoo / "README.md").write_text(render_readme(card, (run_dir / "report.md").read_text()))
    return dst


def check_shipped(model_path, zoo: Path = ZOO):
    """Raises ValueError unless the model's graph is the shipped student's: its card
    describes that graph, so only the thresholds (metadata) may change."""
    import onnx
    shipped = onnx.load(str(zoo / f"{NAME}.onnx")).graph.SerializeToString()
    if onnx.load(str(model_path)).graph.SerializeToString() != shipped:
        raise ValueError(f"{model_path} is not the shipped student {zoo / f'{NAME}.onnx'} (another graph); "
                         f"ship a new model with `{COMMAND}`")


def ship_recalibrated(res: dict, command: str, zoo: Path = ZOO) -> Path:
    """After `pipeline.recalibrate` (its result `res`) on the shipped student (see
    check_shipped): copies the model into the zoo and changes in its card only what the
    thresholds change (exits, test accuracy with exits, exit rates and histogram, expected
    MACs, the target), keeping the pipeline's report in the README."""
    card_path, readme = zoo / f"{NAME}.json", zoo / "README.md"
    card = json.loads(card_path.read_text())
    ex = res["exits"]
    cal, st = ex["calibration"], ex["test"]
    card["exits"] = ex["metadata"]
    card["accuracy_test"]["int8_with_exits"] = st["accuracy"]
    card["expected_macs_fraction_test"] = st["expected_macs"]
    card["exit_histogram_test"] = ex["histogram"]
    card["exit_rates_test"] = [r["rate"] for r in st["per_exit"]]
    card["macs"]["int8_expected_with_exits"] = st["expected_macs"] * res["graph_macs"]
    card["training"]["calibration_target"] = cal["target"]
    card["recalibration"] = {"command": command, "validation": {
        "accuracy": cal["base_accuracy"], "accuracy_with_exits": cal["accuracy"], "drop": cal["drop"],
        "drop_bound": cal["drop_bound"], "expected_macs_fraction": cal["expected_macs"],
        "exit_rates": [r["rate"] for r in ex["val"]["per_exit"]]}}
    report_md = readme.read_text().split(REPORT_HEADING + "\n\n", 1)[1].removesuffix("\n")
    dst = zoo / f"{NAME}.onnx"
    if Path(res["out"]).resolve() != dst.resolve():
        shutil.copyfile(res["out"], dst)
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    readme.write_text(render_readme(card, report_md))
    return dst
