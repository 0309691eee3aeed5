"""Packaging a pipeline run as the shipped student: pyruntime/zoo/fashion_mnist_student.onnx
with its card fashion_mnist_student.json (numbers a test checks) and README.md (for people)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

ZOO = Path(__file__).resolve().parent.parent / "zoo"
NAME = "fashion_mnist_student"
COMMAND = "python -m pyruntime.train fashion-mnist --out runs/fashion-mnist --zoo"


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
                     "gates": rep["config"]["gates"], "calibration_target": {
                         "max_drop": rep["config"]["max_drop"], "macs_budget": rep["config"]["macs_budget"]}},
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
    L += ["", f"MACs per image: teacher {card['macs']['teacher'] / 1e6:.2f} M, student "
          f"{card['macs']['student'] / 1e6:.2f} M, this graph with gates {card['macs']['int8_graph_with_gates'] / 1e6:.2f} M, "
          f"expected with exits {card['macs']['int8_expected_with_exits'] / 1e6:.2f} M. Parameters: teacher "
          f"{card['params']['teacher']:,}, student {card['params']['student']:,}.", "",
          "## The pipeline's report", "", report_md.replace("![", "(plot: ").replace(".png)", ".png in the run directory)")]
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
